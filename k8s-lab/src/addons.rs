//! What every cluster runs besides its components: CoreDNS as a pod behind the `kube-dns`
//! Service, so pods resolve `<service>.<namespace>.svc.cluster.local` as on any cluster.

use std::net::Ipv4Addr;

/// The manifests of CoreDNS: its ServiceAccount and the least RBAC its `kubernetes` plugin
/// needs (list and watch Services, EndpointSlices, Namespaces), its Corefile, a Deployment of
/// one replica with the kubelet probing `/health` and `/ready`, and the `kube-dns` Service on
/// `dns_ip`.
pub fn coredns(image: &str, dns_ip: Ipv4Addr) -> String {
    format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: weft-lab:coredns
rules:
- apiGroups: [""]
  resources: ["services", "namespaces"]
  verbs: ["list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: weft-lab:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: weft-lab:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {{
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {{
            pods insecure
            ttl 30
        }}
        cache 30
        loop
        loadbalance
    }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: {image}
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {{name: dns, containerPort: 53, protocol: UDP}}
        - {{name: dns-tcp, containerPort: 53, protocol: TCP}}
        volumeMounts:
        - {{name: config, mountPath: /etc/coredns, readOnly: true}}
        livenessProbe:
          httpGet: {{path: /health, port: 8080}}
          periodSeconds: 10
        readinessProbe:
          httpGet: {{path: /ready, port: 8181}}
          periodSeconds: 2
        resources:
          requests: {{cpu: 10m, memory: 30Mi}}
          limits: {{memory: 170Mi}}
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  selector:
    k8s-app: kube-dns
  clusterIP: {dns_ip}
  ports:
  - {{name: dns, port: 53, protocol: UDP}}
  - {{name: dns-tcp, port: 53, protocol: TCP}}
"#
    )
}
