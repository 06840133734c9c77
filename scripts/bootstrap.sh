# Sourced by run_local.sh and run_tests.sh: make .venv and install the project into it.
# Reinstalls only when setup.py changed since the last install (a stamp in .venv).
VENV="${FMCG_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
extras="${FMCG_EXTRAS:-}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "fmcg-beam: creating $VENV" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$VENV/.fmcg-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  echo "fmcg-beam: installing pinned dependencies into $VENV" >&2
  # Every install here has the "profile" extra: local runs draw profile.html with it (matplotlib).
  spec=".[profile${extras:+,$extras}]"
  "$VENV/bin/python" -m pip install --quiet -e "$spec"
  touch "$stamp"
fi
# The test extras also install the worked custom-table example (README: Custom tables), whose tests run with
# the suite; --no-deps: it declares none, and fmcg-beam's exact pins are already in place.
case ",$extras," in
  *,test,*)
    example="examples/plugins/fmcg_returns"
    example_stamp="$VENV/.fmcg-installed-example"
    if [ ! -f "$example_stamp" ] || [ "$example/pyproject.toml" -nt "$example_stamp" ]; then
      echo "fmcg-beam: installing the plugin example $example into $VENV" >&2
      "$VENV/bin/python" -m pip install --quiet --no-deps -e "$example"
      touch "$example_stamp"
    fi
    ;;
esac
