# OCI image of ska-tango-scheduler: the package and its device server commands
# (ska-tango-scheduler-eventsource, -schedulerreference, -lrcreference, -demo, -top)
# in a virtual environment at /app, on SKA's Tango Python runtime image.
#
#   make oci-build                       # tags it as the Helm chart names it
#   make oci-build BUILD_IMAGE=... BASE_IMAGE=...
#
# The defaults are SKA's own images (artefact.skao.int). Any Debian-like image with
# Python >= 3.10 and the venv module works for both stages.

ARG BUILD_IMAGE=artefact.skao.int/ska-build-python:0.1.1
ARG BASE_IMAGE=artefact.skao.int/ska-tango-images-tango-python:0.2.1

FROM ${BUILD_IMAGE} AS build

ARG PYTANGO_VERSION=10.3.1
ENV VIRTUAL_ENV=/app \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python3 -m venv "${VIRTUAL_ENV}"
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"

# Dependencies first, in their own layer: a change of the sources does not download
# them again. SKA's runtime image ships PyTango too, but the virtual environment
# copied below must be complete on its own.
RUN pip install "pytango==${PYTANGO_VERSION}" numpy

WORKDIR /build
COPY pyproject.toml README.md LICENSE MANIFEST.in ./
COPY src ./src
# A regular (not editable) install: the runtime stage gets the files, not links here.
RUN pip install --no-deps . \
    && python -c "import ska_tango_scheduler, tango; print('pytango', tango.__version__)" \
    && pip uninstall -y pip

FROM ${BASE_IMAGE}

ARG VERSION=0.1.0
LABEL int.skao.image.team="ska-tango-scheduler" \
      int.skao.image.authors="The ska-tango-scheduler authors" \
      int.skao.image.url="https://gitlab.com/ska-telescope/ska-tango-scheduler" \
      int.skao.image.source="Dockerfile" \
      int.skao.image.version="${VERSION}" \
      description="Tango device servers and tools of ska-tango-scheduler (CallbackScheduler, SchedulerMixin, invoke_lrc)" \
      license="BSD-3-Clause"

ENV VIRTUAL_ENV=/app \
    PYTHONUNBUFFERED=1
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"
COPY --from=build ${VIRTUAL_ENV} ${VIRTUAL_ENV}

# Run as a user without privileges: SKA's runtime image has one (tango); a plain
# Debian base gets it here.
USER root
RUN id -u tango >/dev/null 2>&1 || useradd --uid 1000 --create-home --shell /bin/sh tango
USER tango
WORKDIR /home/tango

CMD ["ska-tango-scheduler-demo", "--help"]
