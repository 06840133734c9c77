# The fmcg-beam Flex-template image, which is also the workers' SDK container.
#
# One image serves both roles, so the job is launched and run with the very
# same packages: Beam's Python SDK image provides the worker entrypoint
# (/opt/apache/beam/boot) and Python 3.11, the Google template launcher is
# copied in, and the package is installed with the exact pins of setup.py
# (the generated data depends on numpy's, Arrow's and DuckDB's versions).
#
# Build and push it with ./run_dataflow.sh build-template (Cloud Build, see
# cloudbuild.yaml), which also passes SDK_CONTAINER_IMAGE, the name the image
# is pushed under: main.py hands it to Dataflow as --sdk_container_image, so
# workers start from this image without a template parameter for it.
# The Beam version below must equal the apache-beam pin in setup.py (a test checks).
# The launcher stage only contributes the binary that starts main.py; replace
# :latest with a dated tag of that image for byte-identical rebuilds.

FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest AS launcher

FROM apache/beam_python3.11_sdk:2.77.0

COPY --from=launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

WORKDIR /template
COPY setup.py main.py ./
COPY fmcg_beam ./fmcg_beam
COPY schemas ./schemas

# apache-beam is already in the base image at the pinned version; pip adds or
# replaces the rest with the exact pins, and pip check fails the build on a conflict.
RUN pip install --no-cache-dir /template && pip check

ARG SDK_CONTAINER_IMAGE=""
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py \
    FLEX_TEMPLATE_PYTHON_SETUP_FILE=/template/setup.py \
    FMCG_SDK_CONTAINER_IMAGE=${SDK_CONTAINER_IMAGE}

ENTRYPOINT ["/opt/apache/beam/boot"]
