{{/*
Names and labels.
*/}}
{{- define "ccbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ccbridge.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ccbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ccbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ccbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ccbridge.labels" -}}
helm.sh/chart: {{ include "ccbridge.chart" . }}
{{ include "ccbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ccbridge
{{- end -}}

{{- define "ccbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ccbridge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ccbridge.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
Fixed paths and ports inside the container (the image's defaults).
*/}}
{{- define "ccbridge.dataDir" -}}/var/lib/ccbridge{{- end -}}
{{- define "ccbridge.configPath" -}}/etc/ccbridge/config.yaml{{- end -}}

{{/*
The ccbridge configuration file: the chart's own keys, with .Values.config merged over them. Keys the chart must
own (they are tied to container ports, probes, the volume mount and the analytics leader) are refused.
*/}}
{{- define "ccbridge.config" -}}
{{- $user := deepCopy (default (dict) .Values.config) -}}
{{- $owned := list
      (list "receivers.otlp.grpc.endpoint" (hasKey (dig "receivers" "otlp" "grpc" (dict) $user) "endpoint"))
      (list "receivers.otlp.http.endpoint" (hasKey (dig "receivers" "otlp" "http" (dict) $user) "endpoint"))
      (list "telemetry.endpoint" (hasKey (dig "telemetry" (dict) $user) "endpoint"))
      (list "storage.directory" (hasKey (dig "storage" (dict) $user) "directory"))
      (list "server.workers" (hasKey (dig "server" (dict) $user) "workers"))
      (list "enrichment.analytics_api.enabled" (hasKey (dig "enrichment" "analytics_api" (dict) $user) "enabled"))
      (list "enrichment.analytics_api.admin_api_key" (hasKey (dig "enrichment" "analytics_api" (dict) $user) "admin_api_key"))
      (list "telemetry.tls (probes and the ServiceMonitor use plain HTTP)" (hasKey (dig "telemetry" (dict) $user) "tls"))
      (list "receivers.auth.tokens_file (receiverAuth.tokensSecret is set)" (and .Values.receiverAuth.tokensSecret.name (hasKey (dig "receivers" "auth" (dict) $user) "tokens_file")))
      (list "receivers.otlp.grpc.tls (tls.secretName is set)" (and .Values.tls.secretName (hasKey (dig "receivers" "otlp" "grpc" (dict) $user) "tls")))
      (list "receivers.otlp.http.tls (tls.secretName is set)" (and .Values.tls.secretName (hasKey (dig "receivers" "otlp" "http" (dict) $user) "tls")))
-}}
{{- range $owned -}}
{{- if index . 1 -}}
{{- fail (printf "config.%s is set by the chart; use the chart values instead (see values.yaml: workers, analytics, receiverAuth, tls, service.ports)" (index . 0)) -}}
{{- end -}}
{{- end -}}
{{- $base := dict
      "receivers" (dict "otlp" (dict
          "grpc" (dict "endpoint" "0.0.0.0:4317")
          "http" (dict "endpoint" "0.0.0.0:4318")))
      "storage" (dict "directory" (include "ccbridge.dataDir" .))
      "telemetry" (dict "endpoint" "0.0.0.0:9464" "log_format" "json")
      "server" (dict "workers" (int .Values.workers))
-}}
{{- if .Values.tls.secretName -}}
{{- $tls := dict "cert_file" "/run/secrets/ccbridge/receiver-tls/tls.crt" "key_file" "/run/secrets/ccbridge/receiver-tls/tls.key" -}}
{{- if .Values.tls.clientCaKey -}}
{{- $_ := set $tls "client_ca_file" "/run/secrets/ccbridge/receiver-tls/client-ca.crt" -}}
{{- end -}}
{{- $_ := set $base.receivers.otlp.grpc "tls" $tls -}}
{{- $_ := set $base.receivers.otlp.http "tls" (deepCopy $tls) -}}
{{- end -}}
{{- if .Values.receiverAuth.tokensSecret.name -}}
{{- $_ := set $base.receivers "auth" (dict "tokens_file" "/run/secrets/ccbridge/receiver-tokens/tokens") -}}
{{- end -}}
{{- $cfg := mergeOverwrite $base $user -}}
{{- if .Values.analytics.enabled -}}
{{- $api := mergeOverwrite (deepCopy (default (dict) .Values.analytics.settings)) (dict
      "enabled" "${env:CCBRIDGE_ANALYTICS_LEADER:-false}"
      "admin_api_key" "${env:ANTHROPIC_ADMIN_API_KEY}") -}}
{{- $enrichment := default (dict) (get $cfg "enrichment") -}}
{{- $_ := set $enrichment "analytics_api" (mergeOverwrite (default (dict) (get $enrichment "analytics_api")) $api) -}}
{{- $_ := set $cfg "enrichment" $enrichment -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
