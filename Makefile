# The commands a newcomer runs. README and CI call these same targets.
.PHONY: demo test sweep lint deny images chart-tools jaeger-tools rules dashboards dashboards-preview unit demo-once fuzz-smoke fuzz deps bench bench-smoke bench-deps bench-micro bench-cni symbol-order profile k8s k8s-deps k8s-prep cluster

CARGO ?= cargo
# Every release build names the same packages, so cargo unifies features once and the demo's
# build serves the benchmark's (and the other way round) instead of rebuilding dependencies.
RELEASE_PACKAGES = -p weft-proxy -p weft-control-plane -p weft-cni -p weft-injector -p weftctl -p weft-bench -p weft-k8s-lab
export RELEASE_PACKAGES
# Incremental compilation helps an edit-compile loop, not a build from a clean checkout, and its
# cache is as large again as target/debug: off unless the caller asks for it.
export CARGO_INCREMENTAL ?= 0

## demo: a live mesh on this machine: as root, pods as network namespaces on the reference CNI
## bridge with weft-cni, proxies, the control plane, traffic and a live table (weftctl demo),
## with Prometheus (Weft's rules) and Jaeger (built first when Go is there) on 127.0.0.1:9090
## and :16686 for a browser; without root, the same mesh's proxies in explicit mode on
## loopback (scripts/try-proxy.sh). Ctrl-C stops it and removes everything it made.
demo: deps
	@if [ "$$(id -u)" -eq 0 ]; then \
	  scripts/jaeger-build.sh >/dev/null || echo "demo: Jaeger not built (above); the demo runs without traces"; \
	  $(CARGO) build --release --locked $(RELEASE_PACKAGES) && ./target/release/weftctl demo; \
	else \
	  echo "demo: not root, so no network namespaces or iptables: running the proxies in explicit mode on loopback instead"; \
	  scripts/try-proxy.sh; \
	fi

## test: everything CI checks: lint, unit and integration tests (the root-only tier included
## when run as root), the demo in one-shot mode, and the fuzz targets built and run briefly
test: deps sweep lint k8s-prep chart-tools jaeger-tools rules dashboards unit demo-once fuzz-smoke bench-smoke

deps:
	scripts/install-deps.sh

## sweep: build what the tests run (debug binaries and tests, the release binaries), then delete
## the executables earlier commits left in target/ (CI keeps target/ between runs, and each
## commit adds a few GB of test executables that nothing reads again; scripts/sweep-target.py)
sweep:
	@mkdir -p target/sweep
	$(CARGO) build --workspace --bins --locked --message-format=json-render-diagnostics > target/sweep/bins.json
	$(CARGO) test --workspace --locked --no-run --message-format=json-render-diagnostics > target/sweep/tests.json
	$(CARGO) build --release --locked $(RELEASE_PACKAGES) --message-format=json-render-diagnostics > target/sweep/release.json
	scripts/sweep-target.py target target/sweep/bins.json target/sweep/tests.json target/sweep/release.json

lint: deny
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## deny: cargo-deny's licence, duplicate-version and source checks (deny.toml); installs
## cargo-deny from crates.io on first use. Advisories need github.com and are not checked here.
deny:
	scripts/deny.sh

## k8s: build the pinned Kubernetes release (tools/k8s), etcd, CoreDNS and a pause program
## from their Go modules into ~/.cache/weft/k8s (WEFT_K8S_CACHE); a second run takes seconds
k8s:
	scripts/k8s-build.sh

## cluster: a real single-node Kubernetes (etcd, API server, controller manager, scheduler,
## containerd, kubelet, kube-proxy, CoreDNS) in its own network namespace, up until Ctrl-C,
## which removes everything it made; it prints its kubeconfig and kubectl command (root)
cluster: k8s-deps k8s
	$(CARGO) build --release --locked $(RELEASE_PACKAGES)
	./target/release/weft-k8s-lab up

k8s-deps:
	scripts/install-deps.sh --require containerd=containerd runc=runc nsenter=util-linux strip=binutils \
	  iptables=iptables ip=iproute2 /usr/lib/cni/bridge=containernetworking-plugins

## k8s-prep: what the k8s tier of `make unit` needs, when it can run (root)
k8s-prep:
	@if [ "$$(id -u)" -eq 0 ]; then $(MAKE) --no-print-directory k8s-deps k8s; \
	else echo "k8s-prep: SKIPPED: the k8s tier needs root (namespaces, mounts, cgroups)"; fi

## images: Weft's OCI images (weft-proxy, weft-control-plane, weft-injector, weft-init: one
## program each, no shell, UID 2121 but for weft-init) from a release build, as archives in
## target/release/images, the same recipe the k8s tier runs its build's binaries in
images:
	scripts/install-deps.sh --require strip=binutils iptables=iptables
	$(CARGO) build --release --locked $(RELEASE_PACKAGES)
	./target/release/weft-k8s-lab images

## chart-tools: what the chart's tests run: Helm built from its Go module (tools/helm, into
## ~/.cache/weft/helm) and kubernetes-validate from PyPI (tools/python, a venv in ~/.cache/weft/py)
chart-tools:
	scripts/helm-build.sh >/dev/null
	scripts/py-tools.sh >/dev/null

## jaeger-tools: Jaeger built from its Go module (tools/jaeger, into ~/.cache/weft/jaeger), the
## real trace collector of the OTLP interop test; a second run takes a second
jaeger-tools:
	scripts/jaeger-build.sh >/dev/null

## rules: the Prometheus rules (helm/weft/rules/weft.rules.yaml): promtool check rules, and their
## unit tests (promtool test rules helm/weft/rules/tests/*.yaml); promtool from Debian's
## prometheus package, installed when missing
rules:
	scripts/rules-test.sh

## dashboards: the Grafana dashboards (helm/weft/dashboards/, written by scripts/dashboards.py):
## up to date with the script, type-checked against @grafana/schema 12.4 (npm, pinned in
## tools/node, installed into ~/.cache/weft/node), the dashboard-linter's rules with promtool
## parsing every expression (scripts/dashboards-check.sh). Their queries run against a real
## Prometheus on the demo mesh in `make unit` (e2e/tests/dashboards.rs).
dashboards:
	scripts/dashboards-check.sh

## dashboards-preview: the demo mesh with a real Prometheus for three minutes, then each
## dashboard drawn from that data to docs/dashboards/<name>.png, the README's pictures (root;
## matplotlib from tools/python; scripts/dashboards-preview.sh)
dashboards-preview:
	scripts/dashboards-preview.sh

## unit: every crate's tests; the binaries first, because the k8s tier packs them into its image
unit:
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked

demo-once:
	scripts/try-proxy.sh --once
	@# 20 requests/s for 8 s: the canary's 10 % share reaches api-v2 (P(none) ~ 5e-8).
	@if [ "$$(id -u)" -eq 0 ]; then ./target/release/weftctl demo --once --rps 20; \
	else echo "demo-once: SKIPPED: weftctl demo needs root (network namespaces and iptables)"; fi

## fuzz-smoke: build every fuzz target and run each for five seconds
fuzz-smoke:
	scripts/fuzz.sh --run 5

## fuzz: run every fuzz target for five minutes
fuzz:
	scripts/fuzz.sh --run 300

## bench: Weft against a direct connection and HAProxy (about 10 minutes), discovery at scale
## (one control plane, up to 10,000 subscribers; about a minute), and connections per proxy
## (8,000 idle ones, and a descriptor limit filled; seconds); writes BENCHMARKS.md
bench: bench-deps
	$(CARGO) build --release --locked $(RELEASE_PACKAGES)
	scripts/symbol-order.sh --check
	./target/release/weft-bench run
	./target/release/weft-bench discovery
	./target/release/weft-bench conns

## bench-smoke: the same harness in under a minute, to prove it works; writes nothing
bench-smoke: bench-deps
	$(CARGO) build --release --locked $(RELEASE_PACKAGES)
	scripts/symbol-order.sh --check
	./target/release/weft-bench run --smoke
	./target/release/weft-bench discovery --smoke
	./target/release/weft-bench conns --smoke

bench-deps:
	scripts/bench-deps.sh

## symbol-order: lay the proxy's code out by when it first runs (proxy/symbol-order.txt, from
## callgrind watching mesh proxies start and serve; a few minutes), so an idle proxy maps less
## of its binary; re-run after dependency updates (bench and bench-smoke say when it is stale)
symbol-order: bench-deps
	scripts/symbol-order.sh

## bench-cni: how long weft-cni's ADD and DEL take, nft and legacy (root; writes nothing)
bench-cni:
	$(CARGO) build --release --locked -p weft-cni
	scripts/bench-cni.sh target/release/weft-cni 30

## bench-micro: criterion micro-benchmarks of the hot pure code
bench-micro:
	$(CARGO) bench --workspace --exclude weft-bench

## profile: callgrind instruction counts per request through one proxy, by function, plain and on the mesh hop
profile: bench-deps
	scripts/profile.sh http1 20000
	scripts/profile.sh http2 20000
	scripts/profile.sh http1 5000 mesh-outbound
	scripts/profile.sh http1 5000 mesh-inbound
