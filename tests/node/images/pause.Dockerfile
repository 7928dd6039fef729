# The pod sandbox image: Kubernetes' pause, compiled from the kubernetes module's source by
# tests/node/tools.sh (static, so nothing else is needed).
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
