#!/usr/bin/env bash
# Run fmcg-beam on Google Cloud Dataflow, or build and launch it as a Flex Template.
# Every subcommand checks its values first (one-line error, exit 2) and takes
# --dry_run, which prints the exact commands with all values filled in and runs
# nothing. See ./run_dataflow.sh --help.
set -euo pipefail
cd "$(dirname "$0")"

PROG="run_dataflow.sh"
PYTHON3="${PYTHON:-python3}"
# Same rules as fmcg_beam.options.PROJECT_PATTERN, and Dataflow's region and job-name rules.
PROJECT_RE='^([a-z][a-z0-9.-]{1,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$'
REGION_RE='^[a-z]+-[a-z]+[0-9]+$'
GCS_RE='^gs://[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9](/.*)?$'
JOB_NAME_RE='^[a-z]([-a-z0-9]{0,1022}[a-z0-9])?$'
IMAGE_RE='^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$'
DEFAULT_MAX_WORKERS=10
DEFAULT_MACHINE_TYPE=n2-standard-4

usage() {
  cat <<'EOF'
Usage:
  ./run_dataflow.sh [submit] --project PROJECT --region REGION --temp_location gs://BUCKET/tmp
                    --dataset DATASET [--scale N] [--seed N] [--max_num_workers N] [--machine_type TYPE]
                    [--job_name NAME] [--wait] [--dry_run] [any other fmcg-beam or Beam option]
      Submit a Dataflow batch job (DataflowRunner, --sink bigquery, --setup_file ./setup.py) and print
      its job id and console address. The job name defaults to fmcg-scaleN-seedN-UTCTIME; workers
      default to at most 10 n2-standard-4. --wait blocks until the job ends and prints the summary.

  ./run_dataflow.sh build-template --image REGION-docker.pkg.dev/PROJECT/REPO/fmcg-beam:TAG
                    --template gs://BUCKET/templates/fmcg.json [--project PROJECT] [--docker] [--dry_run]
      Build and push the template image (Cloud Build with cloudbuild.yaml, or a local
      docker build + push with --docker), then write the Flex Template spec with metadata.json.
      PROJECT defaults to the one in the image path.

  ./run_dataflow.sh launch-template --template gs://BUCKET/templates/fmcg.json --region REGION
                    --project PROJECT --parameters dataset=fmcg,scale=100,seed=7[,...]
                    [--temp_location gs://BUCKET/tmp] [--staging_location gs://BUCKET/staging]
                    [--max_num_workers N] [--machine_type TYPE] [--service_account_email SA]
                    [--job_name NAME] [--dry_run]
      Launch the template (gcloud dataflow flex-template run). Parameters are checked against
      metadata.json first; --parameters may be repeated, and tables=a,b needs no escaping.

Values may also be given as --name=value. PROJECT, REGION and the temp location fall back to
FMCG_PROJECT, FMCG_REGION and FMCG_TEMP_LOCATION.
EOF
}

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}

# A command as a line that can be pasted into a shell.
show() {
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+="$arg "
    else
      out+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  echo "${out% }"
}

need_gcloud() {
  command -v gcloud >/dev/null 2>&1 ||
    die "gcloud is not on PATH; install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run 'gcloud auth login'"
}

check_project() {
  [ -n "$1" ] || die "no project; pass --project YOUR_PROJECT_ID (or set FMCG_PROJECT)"
  [[ "$1" =~ $PROJECT_RE ]] ||
    die "--project '$1' is not a Google Cloud project id; pass one such as my-project-123 (6-30 lowercase letters, digits, hyphens)"
}

check_region() {
  [ -n "$1" ] || die "no region; pass --region REGION, e.g. --region asia-southeast1 (or set FMCG_REGION)"
  [[ "$1" =~ $REGION_RE ]] || die "--region '$1' is not a Google Cloud region; pass one such as asia-southeast1"
}

# A bucket name Cloud Storage accepts: Beam would otherwise ignore the path and pick a default bucket.
check_gcs() {  # flag value example
  [[ "$2" =~ $GCS_RE ]] ||
    die "$1 '$2' is not a gs:// path with a valid bucket name (3-63 lowercase letters, digits, dots, hyphens, underscores); pass $1 $3"
}

check_count() {  # flag value
  [[ "$2" =~ ^[1-9][0-9]{0,3}$ ]] || die "$1 '$2' is not a worker count; pass a whole number from 1 to 9999, e.g. $1 10"
}

check_job_name() {
  [[ "$1" =~ $JOB_NAME_RE ]] ||
    die "job name '$1' is not valid for Dataflow; pass --job_name of lowercase letters, digits and hyphens, starting with a letter"
}

# Dataflow job names allow [-a-z0-9]: scale 0.5 becomes 0p5.
job_name_for() {  # scale seed
  local scale="${1//./p}" seed="$2"
  echo "fmcg-scale${scale,,}-seed${seed}-$(date -u +%Y%m%d-%H%M%S)" | tr -c 'a-z0-9\n-' '-'
}

console_url() {  # job_id region project
  echo "https://console.cloud.google.com/dataflow/jobs/$2/$1?project=$3"
}

# With dry_run 1 prints the command, else echoes it to stderr and runs it.
step() {  # dry_run command...
  local dry="$1"
  shift
  if [ "$dry" = 1 ]; then
    show "$@"
  else
    echo "+ $(show "$@")" >&2
    "$@"
  fi
}

# Reads "--name value" / "--name=value"; sets OPT_VALUE and SHIFT_BY (1 or 2) for the caller.
take() {  # flag "$@"
  local flag="$1"
  shift
  if [[ "$1" == "$flag="* ]]; then
    OPT_VALUE="${1#*=}"
    SHIFT_BY=1
  else
    [ $# -ge 2 ] || die "$flag needs a value"
    OPT_VALUE="$2"
    SHIFT_BY=2
  fi
}

cmd_submit() {
  local project="${FMCG_PROJECT:-}" region="${FMCG_REGION:-}" temp="${FMCG_TEMP_LOCATION:-}"
  local scale="" seed="" job_name="" max_workers="$DEFAULT_MAX_WORKERS" machine="$DEFAULT_MACHINE_TYPE"
  local dry_run=0 wait=0
  local -a rest=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --project|--project=*) take --project "$@"; project="$OPT_VALUE" ;;
      --region|--region=*) take --region "$@"; region="$OPT_VALUE" ;;
      --temp_location|--temp_location=*) take --temp_location "$@"; temp="$OPT_VALUE" ;;
      --scale|--scale=*) take --scale "$@"; scale="$OPT_VALUE" ;;
      --seed|--seed=*) take --seed "$@"; seed="$OPT_VALUE" ;;
      --job_name|--job_name=*) take --job_name "$@"; job_name="$OPT_VALUE" ;;
      --max_num_workers|--max_num_workers=*) take --max_num_workers "$@"; max_workers="$OPT_VALUE" ;;
      --machine_type|--machine_type=*) take --machine_type "$@"; machine="$OPT_VALUE" ;;
      --dry_run) dry_run=1; SHIFT_BY=1 ;;
      --wait) wait=1; SHIFT_BY=1 ;;
      *) rest+=("$1"); SHIFT_BY=1 ;;
    esac
    shift "$SHIFT_BY"
  done
  check_project "$project"
  check_region "$region"
  [ -n "$temp" ] || die "no temp location; pass --temp_location gs://YOUR_BUCKET/tmp (or set FMCG_TEMP_LOCATION)"
  check_gcs --temp_location "$temp" gs://YOUR_BUCKET/tmp
  check_count --max_num_workers "$max_workers"
  [ -n "$job_name" ] || job_name="$(job_name_for "${scale:-1}" "${seed:-42}")"
  check_job_name "$job_name"

  local -a args=(--runner DataflowRunner --sink bigquery --setup_file ./setup.py
    --project "$project" --region "$region" --temp_location "$temp" --job_name "$job_name"
    --max_num_workers "$max_workers" --machine_type "$machine")
  if [ -n "$scale" ]; then args+=(--scale "$scale"); fi
  if [ -n "$seed" ]; then args+=(--seed "$seed"); fi
  args+=(${rest[@]+"${rest[@]}"})

  source ./scripts/bootstrap.sh
  # main.py submits and returns (the template launcher's entry point); python -m fmcg_beam waits for the end.
  local -a cmd=("$VENV/bin/python" main.py "${args[@]}")
  if [ "$wait" = 1 ]; then cmd=("$VENV/bin/python" -m fmcg_beam "${args[@]}"); fi

  # The validation the run starts with, so bad values stop here, before anything is built or submitted.
  "$VENV/bin/python" -c '
import sys
from fmcg_beam.options import OptionsError, resolve
try:
    resolve(sys.argv[1:])
except OptionsError as exc:
    sys.exit(f"'"$PROG"': error: {exc}")
' "${args[@]}" || exit 2
  if [ "$dry_run" = 1 ]; then
    echo "# dry run: would run"
    show "${cmd[@]}"
    return 0
  fi

  local log
  log="$(mktemp)"
  trap "rm -f '$log'" EXIT
  "${cmd[@]}" | tee "$log"
  local job_id
  job_id="$(sed -n 's/^job: *//p' "$log" | tail -n 1)"
  if [ -n "$job_id" ]; then
    echo "console: $(console_url "$job_id" "$region" "$project")"
  else
    echo "console: https://console.cloud.google.com/dataflow/jobs?project=$project (job $job_name)"
  fi
}

project_from_image() {
  if [[ "$1" =~ ^[a-z0-9-]+-docker\.pkg\.dev/([^/]+)/ ]] || [[ "$1" =~ ^([a-z]+\.)?gcr\.io/([^/]+)/ ]]; then
    echo "${BASH_REMATCH[${#BASH_REMATCH[@]}-1]}"
  fi
}

cmd_build_template() {
  local image="" template="" project="${FMCG_PROJECT:-}" docker=0 dry_run=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --image|--image=*) take --image "$@"; image="$OPT_VALUE" ;;
      --template|--template=*) take --template "$@"; template="$OPT_VALUE" ;;
      --project|--project=*) take --project "$@"; project="$OPT_VALUE" ;;
      --docker) docker=1; SHIFT_BY=1 ;;
      --dry_run) dry_run=1; SHIFT_BY=1 ;;
      *) die "unknown option $1 for build-template; see ./run_dataflow.sh --help" ;;
    esac
    shift "$SHIFT_BY"
  done
  [ -n "$image" ] || die "no image; pass --image REGION-docker.pkg.dev/PROJECT/REPO/fmcg-beam:TAG"
  [[ "$image" =~ $IMAGE_RE ]] ||
    die "--image '$image' is not an image name with a tag; pass --image REGION-docker.pkg.dev/PROJECT/REPO/fmcg-beam:TAG"
  [ -n "$template" ] || die "no template path; pass --template gs://YOUR_BUCKET/templates/fmcg.json"
  check_gcs --template "$template" gs://YOUR_BUCKET/templates/fmcg.json
  [[ "$template" == *.json ]] || die "--template '$template' should name a .json file; pass --template gs://YOUR_BUCKET/templates/fmcg.json"
  [ -n "$project" ] || project="$(project_from_image "$image")"
  check_project "$project"
  need_gcloud
  if [ "$docker" = 1 ] && ! command -v docker >/dev/null 2>&1; then
    die "docker is not on PATH; install Docker or drop --docker to build with Cloud Build"
  fi

  if [ "$dry_run" = 1 ]; then echo "# dry run: would run"; fi
  if [ "$docker" = 1 ]; then
    step "$dry_run" docker build --build-arg "SDK_CONTAINER_IMAGE=$image" --tag "$image" .
    step "$dry_run" docker push "$image"
  else
    step "$dry_run" gcloud builds submit . --project "$project" --config cloudbuild.yaml --substitutions "_IMAGE=$image"
  fi
  step "$dry_run" gcloud dataflow flex-template build "$template" --project "$project" --image "$image" \
    --sdk-language PYTHON --metadata-file metadata.json
  if [ "$dry_run" = 1 ]; then return 0; fi
  echo "template: $template"
  echo "image: $image"
}

cmd_launch_template() {
  local template="" region="${FMCG_REGION:-}" project="${FMCG_PROJECT:-}" temp="" staging="" job_name=""
  local max_workers="" machine="" service_account="" dry_run=0
  local -a params=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --template|--template=*) take --template "$@"; template="$OPT_VALUE" ;;
      --region|--region=*) take --region "$@"; region="$OPT_VALUE" ;;
      --project|--project=*) take --project "$@"; project="$OPT_VALUE" ;;
      --parameters|--parameters=*) take --parameters "$@"; params+=("$OPT_VALUE") ;;
      --temp_location|--temp_location=*) take --temp_location "$@"; temp="$OPT_VALUE" ;;
      --staging_location|--staging_location=*) take --staging_location "$@"; staging="$OPT_VALUE" ;;
      --max_num_workers|--max_num_workers=*) take --max_num_workers "$@"; max_workers="$OPT_VALUE" ;;
      --machine_type|--machine_type=*) take --machine_type "$@"; machine="$OPT_VALUE" ;;
      --service_account_email|--service_account_email=*) take --service_account_email "$@"; service_account="$OPT_VALUE" ;;
      --job_name|--job_name=*) take --job_name "$@"; job_name="$OPT_VALUE" ;;
      --dry_run) dry_run=1; SHIFT_BY=1 ;;
      *) die "unknown option $1 for launch-template; see ./run_dataflow.sh --help" ;;
    esac
    shift "$SHIFT_BY"
  done
  [ -n "$template" ] || die "no template path; pass --template gs://YOUR_BUCKET/templates/fmcg.json"
  check_gcs --template "$template" gs://YOUR_BUCKET/templates/fmcg.json
  check_region "$region"
  check_project "$project"
  [ -z "$temp" ] || check_gcs --temp_location "$temp" gs://YOUR_BUCKET/tmp
  [ -z "$staging" ] || check_gcs --staging_location "$staging" gs://YOUR_BUCKET/staging
  [ -z "$max_workers" ] || check_count --max_num_workers "$max_workers"
  [ ${#params[@]} -gt 0 ] || die "no template parameters; pass --parameters dataset=fmcg,scale=100"
  command -v "$PYTHON3" >/dev/null 2>&1 || die "$PYTHON3 is not on PATH; install Python 3 (or set PYTHON) to check the parameters"

  # Checks every parameter against metadata.json (the checks Dataflow applies at launch) and prints
  # one name=value per line, then the scale and the seed for the job name.
  local checked
  checked="$("$PYTHON3" - metadata.json "${params[@]}" <<'PY'
import json, re, sys

meta = json.load(open(sys.argv[1], encoding="utf-8"))
declared = {p["name"]: p for p in meta["parameters"]}
extra = {"sdk_container_image"}  # a Beam option Dataflow accepts from any Python template
values = {}
for spec in sys.argv[2:]:
    sep = ","
    m = re.match(r"^\^(.)\^", spec)
    if m:
        sep, spec = m.group(1), spec[m.end():]
    last = None
    for piece in spec.split(sep):
        if "=" not in piece:
            if last is None:
                sys.exit(f"run_dataflow.sh: error: --parameters {piece!r} is not name=value; pass e.g. --parameters scale=100")
            values[last] += "," + piece  # a list value such as tables=fact_sales,dim_products
            continue
        last, value = piece.split("=", 1)
        values[last] = value
for name, value in values.items():
    if name not in declared and name not in extra:
        sys.exit(f"run_dataflow.sh: error: unknown template parameter {name!r}; the template takes "
                 f"{', '.join(declared)} (worker count, machine type and locations have their own flags)")
    p = declared.get(name)
    if p and not any(re.fullmatch(rx, value) for rx in p.get("regexes", [])):
        sys.exit(f"run_dataflow.sh: error: parameter {name}={value!r} is not valid: {p['helpText']}")
for name, p in declared.items():
    if not p.get("isOptional") and name not in values:
        sys.exit(f"run_dataflow.sh: error: missing template parameter {name}; pass --parameters {name}=... ({p['helpText']})")
for name, value in values.items():
    print(f"{name}={value}")
print(values.get("scale", "1"))
print(values.get("seed", "42"))
PY
)" || exit 2
  local -a lines=()
  mapfile -t lines <<<"$checked"
  local n=${#lines[@]}
  local scale="${lines[n-2]}" seed="${lines[n-1]}"
  [ -n "$job_name" ] || job_name="$(job_name_for "$scale" "$seed")"
  check_job_name "$job_name"
  need_gcloud

  local -a cmd=(gcloud dataflow flex-template run "$job_name" --project "$project" --region "$region"
    --template-file-gcs-location "$template")
  local kv
  for kv in "${lines[@]:0:n-2}"; do
    # gcloud splits --parameters on commas; a value that holds one gets another delimiter.
    if [[ "$kv" == *,* ]]; then cmd+=(--parameters "^~^$kv"); else cmd+=(--parameters "$kv"); fi
  done
  if [ -n "$temp" ]; then cmd+=(--temp-location "$temp"); fi
  if [ -n "$staging" ]; then cmd+=(--staging-location "$staging"); fi
  if [ -n "$max_workers" ]; then cmd+=(--max-workers "$max_workers"); fi
  if [ -n "$machine" ]; then cmd+=(--worker-machine-type "$machine"); fi
  if [ -n "$service_account" ]; then cmd+=(--service-account-email "$service_account"); fi
  cmd+=(--format 'value(job.id)')

  if [ "$dry_run" = 1 ]; then
    echo "# dry run: would run"
    show "${cmd[@]}"
    return 0
  fi
  local job_id
  job_id="$("${cmd[@]}")"
  echo "job: $job_id"
  echo "console: $(console_url "$job_id" "$region" "$project")"
}

for arg in "$@"; do
  case "$arg" in -h|--help) usage; exit 0 ;; esac
done
case "${1:-}" in
  build-template) shift; cmd_build_template "$@" ;;
  launch-template) shift; cmd_launch_template "$@" ;;
  submit) shift; cmd_submit "$@" ;;
  "") usage >&2; exit 2 ;;
  -*) cmd_submit "$@" ;;
  *) die "unknown command '$1'; use submit, build-template or launch-template (see --help)" ;;
esac
