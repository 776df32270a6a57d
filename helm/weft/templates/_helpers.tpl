{{/*
Names and labels. Object names are fixed (weft-control-plane, weft-injector, ...): proxies
reach the control plane by its Service's DNS name and check its SPIFFE ID, which names its
ServiceAccount, so a release-dependent name would break both. One Weft per cluster.
*/}}

{{- define "weft.labels" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weft
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* The selector of a component's pods: stable across upgrades (a Deployment's selector is immutable). */}}
{{- define "weft.selector" -}}
app.kubernetes.io/name: weft
app.kubernetes.io/component: {{ . }}
{{- end }}

{{/* An image reference: (dict "root" $ "image" .Values.image.proxy). */}}
{{- define "weft.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $repo := .image.repository -}}
{{- $prefix := ternary $repo (printf "%s/%s" $registry $repo) (empty $registry) -}}
{{- if .image.digest -}}
{{ $prefix }}@{{ .image.digest }}
{{- else -}}
{{ $prefix }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The control plane's gRPC address as proxies reach it. */}}
{{- define "weft.controlPlaneAddr" -}}
weft-control-plane.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:8443
{{- end }}

{{/* The control plane's SPIFFE ID, which proxies check. */}}
{{- define "weft.controlPlaneIdentity" -}}
spiffe://{{ .Values.identity.trustDomain }}/ns/{{ .Release.Namespace }}/sa/weft-control-plane
{{- end }}

{{/* The security context of every Weft container (UID 2121, nothing it does not need). */}}
{{- define "weft.securityContext" -}}
runAsUser: 2121
runAsGroup: 2121
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "weft.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
- name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The injector's serving certificate as JSON: crt, key and ca (PEM); empty for cert-manager.
Generated ones are read back from the Secret of an earlier release, so an upgrade keeps them.
Every include generates anew, so injector.yaml includes it once and shares the result between
the Secret, the webhook's caBundle and the Deployment's checksum.
*/}}
{{- define "weft.injectorCert" -}}
{{- $c := .Values.injector.certificate -}}
{{- if eq $c.source "given" -}}
{{- dict "crt" $c.crtPEM "key" $c.keyPEM "ca" $c.caPEM | toJson -}}
{{- else if eq $c.source "generate" -}}
{{- $old := lookup "v1" "Secret" .Release.Namespace "weft-injector-tls" -}}
{{- if and $old $old.data (index $old.data "ca.crt") -}}
{{- dict "crt" (index $old.data "tls.crt" | b64dec) "key" (index $old.data "tls.key" | b64dec) "ca" (index $old.data "ca.crt" | b64dec) | toJson -}}
{{- else -}}
{{- $ns := .Release.Namespace -}}
{{- $ca := genCA "weft-injector-ca" 3650 -}}
{{- $names := list (printf "weft-injector.%s.svc" $ns) (printf "weft-injector.%s.svc.%s" $ns .Values.clusterDomain) -}}
{{- $cert := genSignedCert (printf "weft-injector.%s.svc" $ns) nil $names 3650 $ca -}}
{{- dict "crt" $cert.Cert "key" $cert.Key "ca" $ca.Cert | toJson -}}
{{- end -}}
{{- else -}}
{{- dict | toJson -}}
{{- end -}}
{{- end }}
