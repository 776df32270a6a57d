# Sourced (not run) by the scripts that start proxies on loopback (profile.sh, symbol-order.sh):
# a work directory removed on exit with every process started into `pids`, free ports, and a
# mesh PKI (anchor, issuer) with identity tokens for a client and a server service account.
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port_on() { python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"; }
free_port() { free_port_on 127.0.0.1; }

# mesh_pki BIN_DIR NAMESPACE: $work/pki/issuer (the control plane's --issuer), $work/tokens
# (its --tokens), and $work/client.token and $work/server.token for service accounts client and
# server in NAMESPACE.
mesh_pki() {
  "$1/weftctl" certs create-anchor --out "$work/pki" >/dev/null
  "$1/weftctl" certs create-issuer --anchor-cert "$work/pki/anchor.crt" \
    --anchor-key "$work/pki/anchor.key" --out "$work/pki/issuer" >/dev/null
  printf '%s-client-token-0001 %s client\n%s-server-token-0001 %s server\n' "$2" "$2" "$2" "$2" >"$work/tokens"
  echo "$2-client-token-0001" >"$work/client.token"
  echo "$2-server-token-0001" >"$work/server.token"
}

# server_pod NAMESPACE INBOUND_PORT: the manifest of pod server-0 (service account server, pod
# IP 127.0.0.1, its proxy's inbound port), for a control plane reading a local folder.
server_pod() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata: {name: server-0, namespace: $1}
spec:
  serviceAccountName: server
  containers:
  - {name: app, image: app}
  - name: weft-proxy
    image: weft-proxy
    ports: [{name: weft-inbound, containerPort: $2}]
status: {podIP: 127.0.0.1}
YAML
}
