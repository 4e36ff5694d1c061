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

{{/* The site id as it appears in environment variable names: upper case, `-` as `_` (the
hub's site_env_prefix). */}}
{{- define "stackhub.siteEnvId" -}}
{{- . | upper | replace "-" "_" -}}
{{- end -}}

{{/* The Kubernetes spawner's cluster-wide defaults (spawner::k8s::KubeSpawnerConfig) as JSON.
What a server runs comes from its profile, in stackhub.toml's [[profile_list]]. */}}
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
{{- $c := dict "hub_id" (include "stackhub.fullname" .) "namespace" $ns "image" $s.image "image_pull_policy" $s.imagePullPolicy "uid" ($s.uid | int64) "gid" ($s.gid | int64) "storage" $storage "start_timeout_secs" ($s.startTimeoutSeconds | int64) -}}
{{- if $s.gpuResource }}{{ $_ := set $c "gpu_resource" $s.gpuResource }}{{ end -}}
{{- if $s.serviceAccount }}{{ $_ := set $c "service_account" $s.serviceAccount }}{{ end -}}
{{- toPrettyJson $c -}}
{{- end -}}

{{/* Whole numbers in a spawner override as TOML integers (Helm reads every number in values
files as a float, which toToml writes as `1.0`). Changes the dict it is given. */}}
{{- define "stackhub.overrideInts" -}}
{{- if hasKey . "gpus" }}{{ $_ := set . "gpus" (get . "gpus" | int64) }}{{ end -}}
{{- range (get . "tolerations" | default list) -}}
{{- if hasKey . "tolerationSeconds" }}{{ $_ := set . "tolerationSeconds" (get . "tolerationSeconds" | int64) }}{{ end -}}
{{- end -}}
{{- end -}}

{{/* `profileList` as the hub's [[profile_list]] (TOML arrays of tables: rendered after every
plain table). Nothing when the list is empty: the hub then offers its built-in profiles. */}}
{{- define "stackhub.profileList" -}}
{{- if .Values.profileList -}}
{{- $list := deepCopy .Values.profileList -}}
{{- range $p := $list -}}
{{- range $k := list "kubespawner_override" "spawner_override" -}}
{{- with get $p $k }}{{ include "stackhub.overrideInts" . }}{{ end -}}
{{- end -}}
{{- range $o := (get $p "profile_options" | default dict) -}}
{{- range $c := (get $o "choices" | default dict) -}}
{{- range $k := list "kubespawner_override" "spawner_override" -}}
{{- with get $c $k }}{{ include "stackhub.overrideInts" . }}{{ end -}}
{{- end -}}
{{- end -}}
{{- $u := get $o "unlisted_choice" | default dict -}}
{{- range $k := list "kubespawner_override" "spawner_override" -}}
{{- with get $u $k }}{{ include "stackhub.overrideInts" . }}{{ end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{ toToml (dict "profile_list" $list) }}
{{- end -}}
{{- end -}}

{{/* The environment variables of a site's secrets (see stackhub.sites). */}}
{{- define "stackhub.siteTokenEnv" -}}
STACKHUB_SITE_{{ include "stackhub.siteEnvId" . }}_GATEWAY_TOKEN
{{- end -}}
{{- define "stackhub.siteS3SecretEnv" -}}
STACKHUB_SITE_{{ include "stackhub.siteEnvId" . }}_S3_SECRET_ACCESS_KEY
{{- end -}}

{{/* Where a site's CA certificate (ca_config_map) is mounted in the hub's container. */}}
{{- define "stackhub.siteCaDir" -}}/etc/stackhub-sites-ca{{- end -}}

{{/* `sites` as the hub's [[sites]] (arrays of tables: rendered after every plain table). A
secret is never in the file: `token` and `s3.secret_access_key` are Secret references the
Deployment maps to the variables that `token_env` and `secret_env` name. */}}
{{- define "stackhub.sites" -}}
{{- $sites := list -}}
{{- range $site := .Values.sites -}}
{{- $t := dict "id" $site.id "name" $site.name "gateway_url" $site.gateway_url -}}
{{- range $k := list "gateway_auth" "token_roles" "dask_address" "dask_proxy_address" "dask_public_address" -}}
{{- if hasKey $site $k }}{{ $_ := set $t $k (get $site $k) }}{{ end -}}
{{- end -}}
{{- if hasKey $site "gateway_token_lifetime_secs" }}{{ $_ := set $t "gateway_token_lifetime_secs" ($site.gateway_token_lifetime_secs | int64) }}{{ end -}}
{{- if $site.token }}{{ $_ := set $t "token_env" (include "stackhub.siteTokenEnv" $site.id) }}{{ end -}}
{{- if $site.ca_config_map }}{{ $_ := set $t "ca_file" (printf "%s/%s.pem" (include "stackhub.siteCaDir" $) $site.id) }}{{ end -}}
{{- if $site.s3 -}}
{{- $s3 := $site.s3 -}}
{{- $x := dict "mode" $s3.mode -}}
{{- range $k := list "endpoint" "sts_endpoint" "region" "bucket" "access_key_id" "role_arn" "role_prefix" "trusted_principal" -}}
{{- if hasKey $s3 $k }}{{ $_ := set $x $k (get $s3 $k) }}{{ end -}}
{{- end -}}
{{- if hasKey $s3 "duration_secs" }}{{ $_ := set $x "duration_secs" ($s3.duration_secs | int64) }}{{ end -}}
{{- if $s3.secret_access_key }}{{ $_ := set $x "secret_env" (include "stackhub.siteS3SecretEnv" $site.id) }}{{ end -}}
{{- $_ := set $t "s3" $x -}}
{{- end -}}
{{- $sites = append $sites $t -}}
{{- end -}}
{{ toToml (dict "sites" $sites) }}
{{- end -}}

{{/* The projected volume sources of the sites' CA certificates: each ca_config_map's key as
<site id>.pem; empty when no site has one. */}}
{{- define "stackhub.siteCas" -}}
{{- range $site := .Values.sites }}
{{- with $site.ca_config_map }}
- configMap:
    name: {{ .name | quote }}
    items:
      - key: {{ .key | quote }}
        path: {{ printf "%s.pem" $site.id | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The environment variable holding service NAME's API token (the hub's token_env_var):
upper case, anything but letters and digits as `_`. */}}
{{- define "stackhub.serviceTokenEnv" -}}
STACKHUB_SERVICE_{{ regexReplaceAll "[^A-Z0-9]" (upper .) "_" }}_API_TOKEN
{{- end -}}

{{/* `[[services]]`, `[[roles]]` and `[custom_scopes]` from values `services` (keyed by name,
sorted), `roles` and `customScopes`, as TOML. API tokens are not here: the Deployment maps
their Secret references to the environment variables the hub reads. */}}
{{- define "stackhub.services" -}}
{{- $services := list -}}
{{- range $name := keys .Values.services | sortAlpha -}}
{{- $t := omit (get $.Values.services $name) "api_token" "name" -}}
{{- $_ := set $t "name" $name -}}
{{- $services = append $services $t -}}
{{- end -}}
{{- $out := dict -}}
{{- if $services }}{{ $_ := set $out "services" $services }}{{ end -}}
{{- if .Values.roles }}{{ $_ := set $out "roles" .Values.roles }}{{ end -}}
{{- if .Values.customScopes }}{{ $_ := set $out "custom_scopes" .Values.customScopes }}{{ end -}}
{{- if $out }}{{ toToml $out }}{{ end -}}
{{- end -}}

{{/* "true" when the hub's database is PostgreSQL (its URL in database.existingSecret), else
empty: SQLite on the data volume. */}}
{{- define "stackhub.postgres" -}}
{{- if .Values.database.existingSecret }}true{{ end -}}
{{- end -}}

{{/* How many hubs run: `replicas` when set, else 2 on PostgreSQL and 1 on SQLite. Fails for
more than one on SQLite (a second hub on the database file is refused at start-up), and for
PostgreSQL without a cookie secret (every replica, and every restart, must derive the same keys
from it: the _xsrf tokens of forms, the sites' JWT signing key, the OIDC token key). */}}
{{- define "stackhub.replicas" -}}
{{- $pg := include "stackhub.postgres" . -}}
{{- if and $pg (not .Values.cookieSecret.existingSecret) -}}
{{- fail "database.existingSecret (PostgreSQL) needs cookieSecret.existingSecret: on PostgreSQL the hub keeps nothing on a volume and runs as several replicas, which must all derive the same keys from one cookie secret (a Secret holding at least 32 bytes of hex)" -}}
{{- end -}}
{{- $n := ternary 2 1 (eq $pg "true") -}}
{{- with .Values.replicas }}{{ $n = int . }}{{ end -}}
{{- if and (gt $n 1) (not $pg) -}}
{{- fail (printf "replicas: %d needs PostgreSQL: SQLite serves a single hub (a second one on the database file is refused at start-up); set database.existingSecret to a Secret holding a postgres:// URL, or replicas: 1" $n) -}}
{{- end -}}
{{- $n -}}
{{- end -}}
