# adworker: build with the Swift toolchain, run on a slim Debian with only the C libraries it links.
# Static Swift stdlib, so the runtime image needs no Swift; hiredis, libpq and OpenSSL stay dynamic (Debian's).
FROM swift:6.1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libhiredis-dev libpq-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
RUN swift build -c release --product adworker --static-swift-stdlib \
    && install -D "$(swift build -c release --show-bin-path)/adworker" /out/bin/adworker
COPY schema /out/share/adworker/schema

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libhiredis0.14 libpq5 libssl3 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin adworker
COPY --from=build /out/ /usr/local/
USER 10001:10001
# The health and metrics endpoint listens on all interfaces inside the container.
ENV ADWORKER_HTTP=0.0.0.0:9464
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:9464/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/adworker"]
CMD ["run"]
