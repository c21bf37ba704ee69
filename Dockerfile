# srd container image: a slim Python, srd installed from a wheel built in a separate stage,
# running as an unprivileged user. Mount the config at /etc/srd/srd.yaml (listen on
# 0.0.0.0:9877 in it to be reachable from outside the container) or try the sandbox:
#   docker run -p 9877:9877 srd run --sandbox --listen 0.0.0.0:9877

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY srd ./srd
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# Every dependency ships as a binary wheel: the final image has no compiler or build tools.
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/srd --create-home srd
USER 10001:10001
WORKDIR /var/lib/srd
ENV SRD_CONFIG=/etc/srd/srd.yaml \
    PYTHONUNBUFFERED=1
EXPOSE 9877
HEALTHCHECK --interval=30s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9877/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["srd"]
CMD ["run"]
