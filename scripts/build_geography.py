"""Build ``fmcg_beam/data/geography.json``: the PSGC hierarchy with 2020 census populations.

The Philippine Standard Geographic Code comes from the ``barangay`` package (the
PSA masterlist of regions, provinces, cities and municipalities with
``psgc_id`` and ``parent_psgc_id``, offline). It has no populations: those are
the 2020 census counts in ``scripts/census_2020.csv`` (hand-maintained; its
header names the source and defines every kind of count). This script joins
the two by name and writes the compact file the package ships (tens of KB, not
the package's megabytes): every region, every province-level unit and the
cities and municipalities of the census file, each with its PSGC code.

``barangay`` is not a dependency of fmcg-beam; install it only to run this:

    python3 -m venv /tmp/geo && /tmp/geo/bin/pip install barangay
    /tmp/geo/bin/python scripts/build_geography.py          # rewrites the data file
    /tmp/geo/bin/python scripts/build_geography.py --check  # exit 1 if the data file is stale

It fails, naming every problem, on a census name it cannot match to exactly one
PSGC unit, a PSGC unit without a census count, a highly urbanized or NCR city
missing from the census file, or province and city counts that do not add up
to the 2020 census's published region totals.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import unicodedata
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CENSUS = ROOT / "scripts" / "census_2020.csv"
OUT = ROOT / "fmcg_beam" / "data" / "geography.json"

NATIONAL_TOTAL = 109_035_343  # 2020 CPH, Proclamation No. 1179
ABROAD = 2_098  # Filipinos in Philippine embassies, consulates and missions abroad: counted in no region

# Region names as the warehouse shows them, by the PSGC region code (the first two digits).
REGION_NAMES = {
    "01": "Ilocos Region", "02": "Cagayan Valley", "03": "Central Luzon", "04": "CALABARZON",
    "05": "Bicol Region", "06": "Western Visayas", "07": "Central Visayas", "08": "Eastern Visayas",
    "09": "Zamboanga Peninsula", "10": "Northern Mindanao", "11": "Davao Region", "12": "SOCCSKSARGEN",
    "13": "National Capital Region", "14": "Cordillera Administrative Region", "16": "Caraga", "17": "MIMAROPA",
    "18": "Negros Island Region", "19": "Bangsamoro Autonomous Region in Muslim Mindanao",
}

# NCR has no provinces; the PSGC groups its cities in four districts (geographic level "Dist"), which the
# package leaves out. District codes and members from the PSA's PSGC publication.
NCR_DISTRICTS = {
    "NCR, City of Manila, First District": ("1303900000", ["1380600000"]),
    "NCR, Second District": ("1307400000", ["1380500000", "1380700000", "1381200000", "1381300000", "1381400000"]),
    "NCR, Third District": ("1307500000", ["1380100000", "1380400000", "1380900000", "1381600000"]),
    "NCR, Fourth District": ("1307600000", ["1380200000", "1380300000", "1380800000", "1381000000", "1381100000",
                                            "1381500000", "1381701000"]),
}

# What moved between regions since the 2020 census, to rebuild its published region totals as a check:
# (province-level unit, or place, region now, region in 2020). The Negros Island Region was created by
# Republic Act 12000 (2024); the Supreme Court excluded Sulu from BARMM (2024) and the PSGC lists it under
# Region IX; the 2020 CPH counts Cotabato City and the 63 barangays that are now the Special Geographic
# Area under Region XII.
MOVED_SINCE_2020 = [
    ("province", "Negros Occidental", "Negros Island Region", "Western Visayas"),
    ("province", "Negros Oriental", "Negros Island Region", "Central Visayas"),
    ("province", "Siquijor", "Negros Island Region", "Central Visayas"),
    ("province", "Sulu", "Zamboanga Peninsula", "Bangsamoro Autonomous Region in Muslim Mindanao"),
    ("province", "Special Geographic Area", "Bangsamoro Autonomous Region in Muslim Mindanao", "SOCCSKSARGEN"),
    ("place", "Cotabato City, Maguindanao del Norte", "Bangsamoro Autonomous Region in Muslim Mindanao", "SOCCSKSARGEN"),
]


class GeographyError(Exception):
    """The PSGC and the census file do not fit together; the message lists every problem."""


def norm(name: str) -> str:
    """A name for matching: no parenthesised aliases, no "City of" / "City", case, accents kept for ñ."""
    s = re.sub(r"\(.*?\)", "", name).strip().lower()
    s = re.sub(r"^(city of |municipality of )", "", s)
    s = re.sub(r" city$", "", s)
    s = unicodedata.normalize("NFC", s)
    return re.sub(r"[^a-zñ0-9]+", "", s)


def read_census(path: Path = CENSUS) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def load_psgc() -> dict[str, dict]:
    """The ``barangay`` package's units above the barangay, by PSGC code."""
    import barangay  # noqa: PLC0415 - only this script needs it

    return {u["psgc_id"]: u for u in barangay.BARANGAY_FLAT if u["type"] != "barangay"}


def build(psgc: dict[str, dict], census: list[dict[str, str]], package: str) -> dict:
    problems: list[str] = []
    kids: dict[str, list[dict]] = defaultdict(list)
    for u in psgc.values():
        kids[u["parent_psgc_id"]].append(u)

    # ---------------------------------------------------------------- regions
    regions = {}
    for u in psgc.values():
        if u["type"] == "region":
            name = REGION_NAMES.get(u["psgc_id"][:2])
            if name is None:
                problems.append(f"PSGC region {u['name']!r} ({u['psgc_id']}) has no name in REGION_NAMES")
            else:
                regions[u["psgc_id"]] = name
    problems += [f"REGION_NAMES has {n!r}, which is no PSGC region" for c, n in REGION_NAMES.items()
                 if c + "00000000" not in regions]

    # ---------------------------------------------------------------- province-level units
    units: dict[str, dict] = {}  # name -> unit
    for u in psgc.values():
        parent = psgc.get(u["parent_psgc_id"], {})
        if u["type"] in ("province", "special_geographic_area"):
            kind = "province" if u["type"] == "province" else "special geographic area"
        elif u["type"] == "city" and parent.get("type") == "region" and any(k["type"] == "city" for k in kids[u["psgc_id"]]):
            kind = "independent city"  # Isabela City: a province-level entry holding the city itself
        else:
            continue
        name = re.sub(r"\s*\(Not a Province\)", "", u["name"])
        units[name] = {"name": name, "psgc": u["psgc_id"], "region": regions.get(u["parent_psgc_id"]), "kind": kind}
    for name, (code, members) in NCR_DISTRICTS.items():
        units[name] = {"name": name, "psgc": code, "region": regions["1300000000"], "kind": "district"}
        for m in members:
            if psgc.get(m, {}).get("parent_psgc_id") != "1300000000":
                problems.append(f"NCR_DISTRICTS: {m} of {name!r} is no city or municipality of NCR in the PSGC")
    ncr_lgus = {u["psgc_id"] for u in kids["1300000000"] if u["type"] in ("city", "municipality")}
    in_district = [m for _, members in NCR_DISTRICTS.values() for m in members]
    problems += [f"NCR city {psgc[c]['name']!r} ({c}) is in no district of NCR_DISTRICTS"
                 for c in sorted(ncr_lgus - set(in_district))]
    district_of = {m: name for name, (_, members) in NCR_DISTRICTS.items() for m in members}

    # ---------------------------------------------------------------- census counts
    rows = {"region_2020": [], "province": [], "place": []}
    for r in census:
        if r["kind"] not in rows:
            problems.append(f"census_2020.csv: unknown kind {r['kind']!r} of {r['name']!r}")
            continue
        rows[r["kind"]].append(r)
    counted = {r["name"]: int(r["population"]) for r in rows["province"]}
    for name in sorted(set(counted) - set(units)):
        problems.append(f"census_2020.csv: province {name!r} is no province-level unit of the PSGC")
    for name, u in sorted(units.items()):
        if u["kind"] != "district" and name not in counted:
            problems.append(f"census_2020.csv: no count for PSGC {u['kind']} {name!r} ({u['psgc']})")

    # ---------------------------------------------------------------- places
    unit_codes = {u["psgc"] for u in units.values()}
    lgus = [u for u in psgc.values() if u["type"] in ("city", "municipality") and u["psgc_id"] not in unit_codes]
    by_norm: dict[str, list[dict]] = defaultdict(list)
    for u in lgus:
        by_norm[norm(u["name"])].append(u)
    places, taken = [], {}
    for r in rows["place"]:
        unit = units.get(r["province"])
        if unit is None:
            problems.append(f"census_2020.csv: place {r['name']!r} is in unknown province {r['province']!r}")
            continue
        cands = by_norm.get(norm(r["psgc_name"] or r["name"]), [])
        if unit["kind"] == "district":
            match = [u for u in cands if district_of.get(u["psgc_id"]) == unit["name"]]
        else:
            inside = [u for u in cands if u["parent_psgc_id"] == unit["psgc"]]
            # A highly urbanized city hangs from its region in the PSGC, not from the province it lies in.
            huc = [u for u in cands if psgc.get(u["parent_psgc_id"], {}).get("type") == "region"
                   and u["parent_psgc_id"][:2] == unit["psgc"][:2] and u["psgc_id"] not in ncr_lgus]
            match = inside or huc
        if len(match) != 1:
            found = [(u["name"], psgc.get(u["parent_psgc_id"], {}).get("name")) for u in cands]
            problems.append(f"census_2020.csv: place {r['name']!r} in {r['province']!r} matches "
                            f"{len(match)} PSGC units (same name: {found}); set its psgc_name")
            continue
        u = match[0]
        if u["psgc_id"] in taken:
            problems.append(f"census_2020.csv: {r['name']!r} and {taken[u['psgc_id']]!r} are both {u['psgc_id']}")
        taken[u["psgc_id"]] = r["name"]
        huc = u["type"] == "city" and psgc[u["parent_psgc_id"]]["type"] == "region"
        places.append({"name": r["name"], "psgc": u["psgc_id"], "type": u["type"].capitalize(),
                       "province": unit["name"], "highly_urbanized": bool(huc), "population": int(r["population"])})
    hucs = {u["psgc_id"] for u in lgus if psgc[u["parent_psgc_id"]]["type"] == "region"} | ncr_lgus
    problems += [f"census_2020.csv: no count for {psgc[c]['name']!r} ({c}), a highly urbanized or NCR city: "
                 f"province and region populations need it" for c in sorted(hucs - set(taken))]
    if problems:
        raise GeographyError("\n".join(problems))

    # ---------------------------------------------------------------- populations
    for u in units.values():
        u["population"] = counted.get(u["name"], 0)
    for p in places:  # a province's population includes the highly urbanized cities in it
        if p["highly_urbanized"] or units[p["province"]]["kind"] == "district":
            units[p["province"]]["population"] += p["population"]
    region_pop: dict[str, int] = defaultdict(int)
    for u in units.values():
        region_pop[u["region"]] += u["population"]

    # The published 2020 region totals, rebuilt from today's units.
    then = dict(region_pop)
    pops = {"province": {u["name"]: u["population"] for u in units.values()},
            "place": {f"{p['name']}, {p['province']}": p["population"] for p in places}}
    for kind, name, now, was in MOVED_SINCE_2020:
        if name not in pops[kind]:
            problems.append(f"MOVED_SINCE_2020: no {kind} {name!r}")
            continue
        then[now] -= pops[kind][name]
        then[was] = then.get(was, 0) + pops[kind][name]
    published = {r["name"]: int(r["population"]) for r in rows["region_2020"]}
    for name in sorted(set(then) | set(published)):
        got, want = then.get(name, 0), published.get(name, 0)
        if got != want:
            problems.append(f"region {name!r} at its 2020 boundaries: provinces and cities add up to {got:,}, "
                            f"the 2020 census published {want:,}")
    if sum(published.values()) + ABROAD != NATIONAL_TOTAL:
        problems.append(f"the 2020 region totals add up to {sum(published.values()):,} + {ABROAD:,} abroad, "
                        f"not {NATIONAL_TOTAL:,}")
    if problems:
        raise GeographyError("\n".join(problems))

    region_list = [{"name": n, "psgc": c, "population": region_pop[n]} for c, n in sorted(regions.items())]
    unit_list = sorted(units.values(), key=lambda u: u["psgc"])
    places.sort(key=lambda p: (-p["population"], p["psgc"]))
    return {
        "_source": {
            "psgc": f"Philippine Standard Geographic Code (PSA), as carried by the barangay package {package}: "
                    "regions, provinces and the special geographic area with their parents, and the codes and "
                    "city or municipality type of the places. NCR's four districts (its province-level units) are "
                    "the PSGC's district codes, which the package leaves out.",
            "population": "2020 Census of Population and Housing (PSA), population as of 1 May 2020, declared "
                          "official by Proclamation No. 1179 (2021); the counts and their definitions are in "
                          "scripts/census_2020.csv.",
            "definitions": "A place's population is its 2020 count as enumerated in 2020. A province's population "
                           "is its 2020 count including every city in it, the highly urbanized ones too (PSA's "
                           "provincial tables count those apart); an NCR district's is the sum of its cities; "
                           "Isabela City is its own province-level unit in Region IX. A region's population is the "
                           "sum of its province-level units at today's PSGC boundaries (18 regions: Negros Island "
                           "Region since 2024, Sulu under Region IX); regrouped at the 2020 boundaries they give "
                           "the 17 region totals the 2020 census published, which the build checks. Regions add up "
                           f"to {NATIONAL_TOTAL - ABROAD:,}: the national {NATIONAL_TOTAL:,} also counts {ABROAD:,} "
                           "Filipinos in Philippine embassies, consulates and missions abroad.",
            "build": "python scripts/build_geography.py (with the barangay package installed) rewrites this file.",
        },
        "census": {"year": 2020, "national_total": NATIONAL_TOTAL, "abroad": ABROAD},
        "regions": region_list,
        "provinces": [{k: u[k] for k in ("name", "psgc", "kind", "region", "population")} for u in unit_list],
        "places": places,
    }


def render(doc: dict) -> str:
    """One line per region, province and place: small, and a reviewable diff."""
    lines = ["{"]
    source = json.dumps(doc["_source"], ensure_ascii=False, indent=2).replace("\n", "\n  ")
    lines.append(f'  "_source": {source},')
    lines.append(f'  "census": {json.dumps(doc["census"])},')
    for i, key in enumerate(("regions", "provinces", "places")):
        lines.append(f'  "{key}": [')
        items = [f"    {json.dumps(x, ensure_ascii=False)}" for x in doc[key]]
        lines.append(",\n".join(items))
        lines.append("  ]" + ("," if i < 2 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the data file differs from a fresh build")
    args = parser.parse_args(argv)
    try:
        text = render(build(load_psgc(), read_census(), version("barangay")))
    except GeographyError as e:
        print(f"build_geography: the PSGC and scripts/census_2020.csv do not fit:\n{e}", file=sys.stderr)
        return 1
    if args.check:
        stale = not OUT.exists() or OUT.read_text(encoding="utf-8") != text
        print(f"{OUT.relative_to(ROOT)} is {'stale: run scripts/build_geography.py' if stale else 'up to date'}")
        return int(stale)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
