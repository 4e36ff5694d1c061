{{- define "stackhub.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stackhub.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "stackhub.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end -}}

{{/* An env var from a Secret reference, only when the reference names a Secret. */}}
{{- define "stackhub.secretEnv" -}}
{{- if .ref.existingSecret }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .ref.existingSecret | quote }}
      key: {{ .ref.key | quote }}
{{- end }}
{{- end -}}

{{/* The Kubernetes spawner's settings (spawner::k8s::KubeSpawnerConfig) as JSON. */}}
{{- define "stackhub.spawnerConfig" -}}
{{- $s := .Values.spawner -}}
{{- $ns := dict "mode" $s.namespace.mode -}}
{{- if eq $s.namespace.mode "per_user" -}}
{{- $_ := set $ns "prefix" $s.namespace.prefix -}}
{{- else -}}
{{- $_ := set $ns "namespace" .Release.Namespace -}}
{{- end -}}
{{- $storage := dict "enabled" $s.storage.enabled "size" $s.storage.size "mount_path" $s.storage.mountPath "per_named_server" $s.storage.perNamedServer -}}
{{- if $s.storage.storageClass }}{{ $_ := set $storage "storage_class" $s.storage.storageClass }}{{ end -}}
{{- $profiles := dict -}}
{{- range $slug, $p := $s.profiles -}}
{{- $q := dict "display_name" ($p.displayName | default $slug) -}}
{{- if $p.image }}{{ $_ := set $q "image" $p.image }}{{ end -}}
{{- if $p.nodeSelector }}{{ $_ := set $q "node_selector" $p.nodeSelector }}{{ end -}}
{{- if $p.tolerations }}{{ $_ := set $q "tolerations" $p.tolerations }}{{ end -}}
{{- if $p.cpuRequest }}{{ $_ := set $q "cpu_request" $p.cpuRequest }}{{ end -}}
{{- if $p.memoryRequest }}{{ $_ := set $q "memory_request" $p.memoryRequest }}{{ end -}}
{{- if $p.gpuResource }}{{ $_ := set $q "gpu_resource" $p.gpuResource }}{{ end -}}
{{- if hasKey $p "perNamedServerStorage" }}{{ $_ := set $q "per_named_server_storage" $p.perNamedServerStorage }}{{ end -}}
{{- if $p.env }}{{ $_ := set $q "env" $p.env }}{{ end -}}
{{- $_ := set $profiles $slug $q -}}
{{- end -}}
{{- $c := dict "hub_id" (include "stackhub.fullname" .) "namespace" $ns "image" $s.image "image_pull_policy" $s.imagePullPolicy "uid" $s.uid "gid" $s.gid "storage" $storage "profiles" $profiles "start_timeout_secs" $s.startTimeoutSeconds -}}
{{- if $s.defaultProfile }}{{ $_ := set $c "default_profile" $s.defaultProfile }}{{ end -}}
{{- toPrettyJson $c -}}
{{- end -}}
