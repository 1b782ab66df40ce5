# Observability: the Prometheus image of the compose profile `observability`.
.PHONY: images-prometheus

## images-prometheus: Prometheus (built from its Go module, cached) in a scratch image
images-prometheus:
	./deploy/observability/build-image.sh
