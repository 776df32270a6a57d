#!/usr/bin/env bash
# scripts/check-crds.sh: prove the CRDs the k8s tier applies against a real API server, quickly
# and without the whole cluster: etcd and kube-apiserver on 127.0.0.1 inside a network namespace
# of their own (loopback only, nothing leaves it), every CRD from scripts/k8s-crds.sh applied
# and Established, then every k8s-lab/tests/crd-cases/valid/*.yaml must be created and every
# invalid/*.yaml refused with the text of its first line's "# expect: ...". Throwaway certificates
# come from openssl. Root only. Everything it started is stopped by PID, and its namespace and
# files removed, on every exit.
#
# The Kubernetes binaries (etcd, kube-apiserver, kubectl) come from WEFT_K8S_BIN, else from
# scripts/k8s-build.sh (a build on first use). Prints "N passed, N failed" at the end; VERBOSE=1
# also prints each refusal and what `kubectl get` shows of the accepted objects.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cases=$root/k8s-lab/tests/crd-cases

if [ "$(id -u)" -ne 0 ]; then
  echo "check-crds: needs root (a network namespace of its own)" >&2
  exit 1
fi
for tool in ip openssl; do
  command -v "$tool" >/dev/null || { echo "check-crds: no '$tool' on PATH" >&2; exit 1; }
done
bin=${WEFT_K8S_BIN:-$("$root/scripts/k8s-build.sh" | tail -n 1)}
for b in etcd kube-apiserver kubectl; do
  [ -x "$bin/$b" ] || { echo "check-crds: no $bin/$b; run make k8s or set WEFT_K8S_BIN" >&2; exit 1; }
done

work=$(mktemp -d /tmp/weft-check-crds.XXXXXX)
ns=weft-crds-$$
pids=()
# Running, not gone or a zombie waiting to be reaped.
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
# SIGTERM, up to 15 s to exit, then SIGKILL; reaped either way.
stop() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 30); do alive "$1" || break; sleep 0.5; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  local i
  # The API server before etcd, so it is not left waiting for its storage.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[i]}"; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }

# Throwaway PKI: a CA, the API server's serving certificate for 127.0.0.1, an admin client in
# system:masters, and the service-account signing key pair the API server insists on.
pki=$work/pki
mkdir -p "$pki"
(
  cd "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=check-crds-ca -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj /O=system:masters/CN=check-crds-admin -keyout admin.key -out admin.csr 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > admin.ext
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
    -extfile admin.ext -out admin.crt 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
  openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
)
kubeconfig=$work/kubeconfig
cat > "$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: check-crds
  cluster:
    server: https://127.0.0.1:6443
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: check-crds
  context: {cluster: check-crds, user: admin}
current-context: check-crds
EOF
kubectl() { in_ns "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# A plain command started with & (not a shell function, which would run in a subshell of its
# own), and `ip netns exec` execs the program: $! is the component's own PID.
ip netns exec "$ns" "$bin/etcd" --name check-crds --data-dir "$work/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster check-crds=http://127.0.0.1:2380 >"$work/etcd.log" 2>&1 &
pids+=($!)
ip netns exec "$ns" "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port 6443 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range 198.18.128.0/24 >"$work/kube-apiserver.log" 2>&1 &
pids+=($!)

fail_with_logs() {
  echo "check-crds: $1" >&2
  for log in etcd kube-apiserver; do
    echo "--- the last lines of $log.log:" >&2
    tail -n 20 "$work/$log.log" >&2
  done
  exit 1
}
ready=
for _ in $(seq 1 120); do
  for pid in "${pids[@]}"; do
    alive "$pid" || fail_with_logs "a component exited before the API server was ready"
  done
  if kubectl get --raw /readyz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.5
done
[ -n "$ready" ] || fail_with_logs "the API server was not ready after 60 s"
echo "check-crds: API server $(kubectl get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p') ready" >&2

crds=$("$root/scripts/k8s-crds.sh" "$work/crds" | tail -n 1)
for dir in gateway-api smi weft; do
  kubectl apply --server-side -f "$crds/$dir/" >"$work/apply-$dir.log" 2>&1 || {
    cat "$work/apply-$dir.log" >&2
    fail_with_logs "applying the CRDs of $crds/$dir failed"
  }
  # The API server's warnings (a CEL cost close to its limit, say) are worth reading.
  grep -i warning "$work/apply-$dir.log" >&2 || true
done
kubectl wait --for condition=Established --timeout 60s crd --all >/dev/null || fail_with_logs "the CRDs were not all Established after 60 s"
echo "check-crds: $(kubectl get crd -o name | wc -l) CRDs Established" >&2

kubectl create namespace crd-cases >/dev/null
passed=0
failed=0
for f in "$cases"/valid/*.yaml; do
  if out=$(kubectl create -n crd-cases -f "$f" 2>&1); then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL valid/${f##*/}: refused: $out" >&2
  fi
done
for f in "$cases"/invalid/*.yaml; do
  expect=$(sed -n '1s/^# expect: //p' "$f")
  if [ -z "$expect" ]; then
    failed=$((failed + 1))
    echo "FAIL invalid/${f##*/}: its first line is not '# expect: <text>'" >&2
  elif out=$(kubectl create -n crd-cases -f "$f" 2>&1); then
    failed=$((failed + 1))
    echo "FAIL invalid/${f##*/}: accepted: $out" >&2
  elif [[ $out != *"$expect"* ]]; then
    failed=$((failed + 1))
    echo "FAIL invalid/${f##*/}: refused without '$expect': $out" >&2
  else
    passed=$((passed + 1))
    [ -z "${VERBOSE:-}" ] || echo "ok invalid/${f##*/}: $out" >&2
  fi
done
if [ -n "${VERBOSE:-}" ]; then
  # What a person sees: the printer columns and the served versions.
  kubectl get weft -n crd-cases -o wide >&2
  kubectl get trafficsplits.v1alpha2.split.smi-spec.io,httproutes -n crd-cases >&2
fi
echo "check-crds: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
