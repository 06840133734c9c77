#!/usr/bin/env bash
# Run fmcg-beam on Google Cloud Dataflow, or build and launch it as a Flex Template, once or daily
# (Cloud Scheduler).
# Every subcommand checks its values first (one-line error, exit 2) and takes
# --dry_run, which prints the exact commands with all values filled in and runs
# nothing. See ./run_dataflow.sh --help. The checks are Python's, never copies
# here: fmcg_beam/launch_checks.py (Google Cloud names, template parameters
# against metadata.json; any python3) and, for submit, the run's own option
# validation (fmcg_beam.options, in .venv).
set -euo pipefail
cd "$(dirname "$0")"

PROG="run_dataflow.sh"
PYTHON3="${PYTHON:-python3}"
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

  ./run_dataflow.sh schedule --project PROJECT --region REGION --template gs://BUCKET/templates/fmcg.json
                    --dataset DATASET --service_account_email SA@PROJECT.iam.gserviceaccount.com
                    [--time HH:MM] [--job NAME] [--scheduler_location REGION] [--parameters scale=10,seed=7]
                    [--temp_location gs://BUCKET/tmp] [--max_num_workers N] [--machine_type TYPE]
                    [--worker_service_account_email SA] [--body_file PATH] [--dry_run]
      Create (or, when it exists, update) a Cloud Scheduler job that launches the template every day at
      HH:MM Asia/Manila time (default 02:00) with --mode incremental --start_date yesterday --end_date
      yesterday, as SA (workers run as --worker_service_account_email, default SA). The job is named
      fmcg-daily-DATASET unless --job is given, and lives in REGION unless --scheduler_location is given.
      The launch request's body is checked against metadata.json and written to PATH (default: a
      temporary file, kept by --dry_run so the printed commands can be run).

  ./run_dataflow.sh unschedule --project PROJECT --scheduler_location REGION --job NAME [--dry_run]
      Delete the Cloud Scheduler job (--dataset DATASET names the default fmcg-daily-DATASET instead of
      --job; --region stands in for --scheduler_location).

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

# Checks a subcommand's values (fmcg_beam/launch_checks.py, standard-library Python, so no .venv is needed)
# and prints what it resolved, one a line; a bad value prints one error line and exits 2.
check() {  # command --name=value...
  command -v "$PYTHON3" >/dev/null 2>&1 ||
    die "$PYTHON3 is not on PATH; install Python 3 (or set PYTHON) to check the values"
  "$PYTHON3" -m fmcg_beam.launch_checks "--prog=$PROG" "$@"
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
  job_name="$(check submit "--project=$project" "--region=$region" "--temp_location=$temp" \
    "--max_num_workers=$max_workers" "--job_name=$job_name" "--scale=$scale" "--seed=$seed")" || exit 2

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
  "$VENV/bin/python" -m fmcg_beam.option_table --check-run "--prog=$PROG" -- "${args[@]}" || exit 2
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
  project="$(check build-template "--image=$image" "--template=$template" "--project=$project")" || exit 2
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
  # Also checks every parameter as Dataflow will at launch (metadata.json's names and regexes) and prints the
  # job name (given, else from the scale and the seed), then one name=value per parameter.
  local checked
  checked="$(check launch-template "--template=$template" "--region=$region" "--project=$project" \
    "--temp_location=$temp" "--staging_location=$staging" "--max_num_workers=$max_workers" \
    "--job_name=$job_name" ${params[@]+"${params[@]/#/--parameters=}"})" || exit 2
  local -a lines=()
  mapfile -t lines <<<"$checked"
  job_name="${lines[0]}"
  need_gcloud

  local -a cmd=(gcloud dataflow flex-template run "$job_name" --project "$project" --region "$region"
    --template-file-gcs-location "$template")
  local kv
  for kv in "${lines[@]:1}"; do
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

cmd_schedule() {
  local project="${FMCG_PROJECT:-}" region="${FMCG_REGION:-}" temp="${FMCG_TEMP_LOCATION:-}" template="" dataset=""
  local service_account="" worker_account="" time="" job="" location="" max_workers="" machine="" body_file=""
  local dry_run=0
  local -a params=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --project|--project=*) take --project "$@"; project="$OPT_VALUE" ;;
      --region|--region=*) take --region "$@"; region="$OPT_VALUE" ;;
      --template|--template=*) take --template "$@"; template="$OPT_VALUE" ;;
      --dataset|--dataset=*) take --dataset "$@"; dataset="$OPT_VALUE" ;;
      --service_account_email|--service_account_email=*) take --service_account_email "$@"; service_account="$OPT_VALUE" ;;
      --worker_service_account_email|--worker_service_account_email=*)
        take --worker_service_account_email "$@"; worker_account="$OPT_VALUE" ;;
      --time|--time=*) take --time "$@"; time="$OPT_VALUE" ;;
      --job|--job=*) take --job "$@"; job="$OPT_VALUE" ;;
      --scheduler_location|--scheduler_location=*) take --scheduler_location "$@"; location="$OPT_VALUE" ;;
      --parameters|--parameters=*) take --parameters "$@"; params+=("$OPT_VALUE") ;;
      --temp_location|--temp_location=*) take --temp_location "$@"; temp="$OPT_VALUE" ;;
      --max_num_workers|--max_num_workers=*) take --max_num_workers "$@"; max_workers="$OPT_VALUE" ;;
      --machine_type|--machine_type=*) take --machine_type "$@"; machine="$OPT_VALUE" ;;
      --body_file|--body_file=*) take --body_file "$@"; body_file="$OPT_VALUE" ;;
      --dry_run) dry_run=1; SHIFT_BY=1 ;;
      *) die "unknown option $1 for schedule; see ./run_dataflow.sh --help" ;;
    esac
    shift "$SHIFT_BY"
  done
  # Checks every value, the template parameters as Dataflow will at each launch, writes the launch request's
  # body and prints: job, location, cron schedule, time zone, launch address, body file, description.
  local checked
  checked="$(check schedule "--project=$project" "--region=$region" "--template=$template" "--dataset=$dataset" \
    "--service_account_email=$service_account" "--worker_service_account_email=$worker_account" "--time=$time" \
    "--job=$job" "--scheduler_location=$location" "--temp_location=$temp" "--max_num_workers=$max_workers" \
    "--machine_type=$machine" "--body_file=$body_file" ${params[@]+"${params[@]/#/--parameters=}"})" || exit 2
  local -a lines=()
  mapfile -t lines <<<"$checked"
  job="${lines[0]}"
  location="${lines[1]}"
  local body="${lines[5]}"
  if [ -z "$body_file" ]; then trap "rm -f '$body'" EXIT; fi
  need_gcloud

  local -a target=(--location "$location" --project "$project" --schedule "${lines[2]}" --time-zone "${lines[3]}"
    --uri "${lines[4]}" --http-method POST --oauth-service-account-email "$service_account"
    --oauth-token-scope https://www.googleapis.com/auth/cloud-platform --message-body-from-file "$body"
    --description "${lines[6]}")
  local -a describe=(gcloud scheduler jobs describe "$job" --location "$location" --project "$project" --format 'value(name)')
  local -a create=(gcloud scheduler jobs create http "$job" "${target[@]}" --headers Content-Type=application/json)
  local -a update=(gcloud scheduler jobs update http "$job" "${target[@]}" --update-headers Content-Type=application/json)

  if [ "$dry_run" = 1 ]; then
    trap - EXIT  # the printed commands read the body file
    echo "# dry run: would run"
    show "${describe[@]}"
    echo "# then, if there is no job $job in $location yet:"
    show "${create[@]}"
    echo "# or, if there is one (schedule run again), replace its settings:"
    show "${update[@]}"
    echo "# request body: $body"
    return 0
  fi
  # A rerun updates the job in place, so it neither fails nor makes a second job.
  if "${describe[@]}" >/dev/null 2>&1; then step 0 "${update[@]}"; else step 0 "${create[@]}"; fi
  echo "scheduled: $job ($location), cron '${lines[2]}' ${lines[3]}"
  echo "console: https://console.cloud.google.com/cloudscheduler?project=$project"
}

cmd_unschedule() {
  local project="${FMCG_PROJECT:-}" region="${FMCG_REGION:-}" location="" job="" dataset="" dry_run=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --project|--project=*) take --project "$@"; project="$OPT_VALUE" ;;
      --region|--region=*) take --region "$@"; region="$OPT_VALUE" ;;
      --scheduler_location|--scheduler_location=*) take --scheduler_location "$@"; location="$OPT_VALUE" ;;
      --job|--job=*) take --job "$@"; job="$OPT_VALUE" ;;
      --dataset|--dataset=*) take --dataset "$@"; dataset="$OPT_VALUE" ;;
      --dry_run) dry_run=1; SHIFT_BY=1 ;;
      *) die "unknown option $1 for unschedule; see ./run_dataflow.sh --help" ;;
    esac
    shift "$SHIFT_BY"
  done
  local checked
  checked="$(check unschedule "--project=$project" "--region=$region" "--scheduler_location=$location" \
    "--job=$job" "--dataset=$dataset")" || exit 2
  local -a lines=()
  mapfile -t lines <<<"$checked"
  need_gcloud
  if [ "$dry_run" = 1 ]; then echo "# dry run: would run"; fi
  step "$dry_run" gcloud scheduler jobs delete "${lines[0]}" --location "${lines[1]}" --project "$project" --quiet
}

for arg in "$@"; do
  case "$arg" in -h|--help) usage; exit 0 ;; esac
done
case "${1:-}" in
  build-template) shift; cmd_build_template "$@" ;;
  launch-template) shift; cmd_launch_template "$@" ;;
  schedule) shift; cmd_schedule "$@" ;;
  unschedule) shift; cmd_unschedule "$@" ;;
  submit) shift; cmd_submit "$@" ;;
  "") usage >&2; exit 2 ;;
  -*) cmd_submit "$@" ;;
  *) die "unknown command '$1'; use submit, build-template, launch-template, schedule or unschedule (see --help)" ;;
esac
