{{/* The release's base name, at most 28 characters so that suffixes stay under 63. */}}
{{- define "kc.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 28 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 28 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kc.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kc.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* A model name as a DNS label: "gpt-3.5-turbo" -> "gpt-3-5-turbo". */}}
{{- define "kc.slug" -}}
{{- regexReplaceAll "[^a-z0-9-]" (lower .) "-" | trunc 24 | trimSuffix "-" -}}
{{- end -}}

{{/* Topic and group names: schemas/topics.py's Topics, which tests/unit/test_helm.py compares. */}}
{{- define "kc.requestsTopic" -}}
{{ .prefix }}completions.requests.{{ .model }}
{{- end -}}
{{- define "kc.bulkTopic" -}}
{{ .prefix }}completions.requests.{{ .model }}.bulk
{{- end -}}
{{- define "kc.workerGroup" -}}
{{ .prefix }}kc-worker.{{ .model }}
{{- end -}}

{{/* A worker's backend kind: its `backend` value, else the registry's (files/catalog.json). */}}
{{- define "kc.workerKind" -}}
{{- $catalog := .root.Files.Get "files/catalog.json" | fromJson -}}
{{- $kind := .worker.backend | default (get $catalog.models .worker.model) -}}
{{- if not $kind -}}
{{- fail (printf "workers: model %q is not in the packaged registry; give its `backend` (one of %s)" .worker.model (keys $catalog.kinds | sortAlpha | join ", ")) -}}
{{- end -}}
{{- if not (hasKey $catalog.kinds $kind) -}}
{{- fail (printf "workers: backend %q of model %q is not one of %s" $kind .worker.model (keys $catalog.kinds | sortAlpha | join ", ")) -}}
{{- end -}}
{{- $kind -}}
{{- end -}}

{{/* The environment every process shares: Kafka, topics, registry, KC_ settings. */}}
{{- define "kc.commonEnv" -}}
- name: KC_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: KC_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: KC_REQUEST_PARTITIONS
  value: {{ .Values.kafka.requestPartitions | quote }}
- name: KC_RESULTS_PARTITIONS
  value: {{ .Values.kafka.resultsPartitions | quote }}
- name: KC_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}
- name: KC_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: KC_KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is required with a SASL_ protocol" .Values.kafka.sasl.username | quote }}
- name: KC_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.passwordSecret.name is required with a SASL_ protocol" .Values.kafka.sasl.passwordSecret.name }}
      key: {{ .Values.kafka.sasl.passwordSecret.key }}
{{- end }}
- name: KC_HOST
  value: "0.0.0.0"
- name: KC_REGISTRY_PATH
  value: /etc/kafka-completions/models.toml
{{- end -}}

{{/* .Values.env under a workload's own env (which wins), as container variables. */}}
{{- define "kc.extraEnv" -}}
{{- range $name, $value := merge (deepCopy .own) .root.Values.env }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* A vendor kind's key (from the Secret `vendors.<kind>` names) and base URL. */}}
{{- define "kc.vendorEnv" -}}
{{- $catalog := .root.Files.Get "files/catalog.json" | fromJson -}}
{{- $kind := get $catalog.kinds .kind -}}
{{- if $kind.apiKeyEnv }}
{{- $vendor := get .root.Values.vendors .kind | default dict -}}
- name: {{ $kind.apiKeyEnv }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "vendors.%s.secretName is required: the Secret holding %s" .kind $kind.apiKeyEnv) $vendor.secretName }}
      key: {{ $vendor.secretKey | default "api-key" }}
{{- if and $kind.baseUrlEnv $vendor.baseUrl }}
- name: {{ $kind.baseUrlEnv }}
  value: {{ $vendor.baseUrl | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "kc.registryVolume" -}}
- name: registry
  configMap:
    name: {{ include "kc.fullname" . }}-registry
{{- end -}}

{{- define "kc.registryMount" -}}
- name: registry
  mountPath: /etc/kafka-completions
  readOnly: true
{{- end -}}
