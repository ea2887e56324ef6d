{{/*
Names, labels and the pieces every role's pod shares. The four roles are one table
("aliexpress.roles"); deployment.yaml, pdb.yaml, service.yaml and keda.yaml loop over it.
*/}}

{{- define "aliexpress.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aliexpress.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aliexpress.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "aliexpress.labels" -}}
helm.sh/chart: {{ include "aliexpress.chart" . }}
app.kubernetes.io/name: {{ include "aliexpress.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aliexpress
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "api"). */}}
{{- define "aliexpress.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aliexpress.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of a pod: the common ones and its component: (dict "root" $ "component" "api"). */}}
{{- define "aliexpress.podLabels" -}}
{{ include "aliexpress.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .root.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aliexpress.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "aliexpress.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aliexpress.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the roles read: the existing one, or the chart's. */}}
{{- define "aliexpress.secretName" -}}
{{- .Values.secret.existingSecret | default (include "aliexpress.fullname" .) }}
{{- end }}

{{/*
The roles: values key, component name, subcommand, the services it uses (which decides its
secret keys, certificates and variables) and its drain bound after SIGTERM in seconds (see
values.yaml, terminationGracePeriodSeconds). Topic and group names are those of
src/names.rs (PRODUCT_COMMANDS_TOPIC, PRODUCT_COMMAND_GROUP, ...); `make helm-check`
compares them with that file.
*/}}
{{- define "aliexpress.roles" -}}
- key: api
  component: api
  args: [serve]
  uses: [database, redis, kafka, opensearch, tokens]
  drainSeconds: 15
- key: relay
  component: relay
  args: [process-outbox, --follow]
  uses: [database, kafka]
  drainSeconds: 45
- key: commandConsumer
  component: command-consumer
  args: [run-product-consumer]
  uses: [database, kafka]
  drainSeconds: 30
  topic: product.commands
  defaultGroup: product-command-consumer-group
  groupEnv: PRODUCT_COMMAND_GROUP
- key: projection
  component: projection
  args: [run-product-event-consumer]
  uses: [database, redis, kafka, opensearch]
  drainSeconds: 40
  topic: product.events
  defaultGroup: product-event-projection-group
  groupEnv: PRODUCT_PROJECTION_GROUP
{{- end }}

{{/* The consumer group a consumer role joins: (dict "root" $ "role" $r). */}}
{{- define "aliexpress.consumerGroup" -}}
{{- $v := index .root.Values .role.key }}
{{- $v.group | default (printf "%s%s" .root.Values.config.namespace .role.defaultGroup) }}
{{- end }}

{{/* Where a tls group's Secret is mounted. */}}
{{- define "aliexpress.tlsDir" -}}
/etc/aliexpress/tls/{{ . }}
{{- end }}

{{/* librdkafka's sasl.mechanism as KEDA's `sasl` value; empty when KEDA has no such mode. */}}
{{- define "aliexpress.kedaSasl" -}}
{{- $m := upper .Values.kafka.saslMechanism }}
{{- get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") $m }}
{{- end }}

{{- define "aliexpress.kafkaUsesSasl" -}}
{{- if hasPrefix "sasl" (lower .Values.kafka.securityProtocol) }}true{{ end }}
{{- end }}

{{- define "aliexpress.kafkaUsesTls" -}}
{{- if has (lower .Values.kafka.securityProtocol) (list "ssl" "sasl_ssl") }}true{{ end }}
{{- end }}

{{/* One secret key as an env entry: (dict "name" "DATABASE_URL" "secret" NAME "optional" bool). */}}
{{- define "aliexpress.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .name }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/*
Environment of a pod: (dict "root" $ "uses" LIST "secret" NAME "values" ROLE_VALUES "role" ROLE).
Each service in `uses` brings its secret keys, certificate paths and plain settings.
*/}}
{{- define "aliexpress.env" -}}
{{- $root := .root }}
{{- $V := $root.Values }}
{{- $uses := .uses }}
{{- $secret := .secret -}}
- name: LOG_FORMAT
  value: {{ $V.config.logFormat | quote }}
- name: RUST_LOG
  value: {{ $V.config.rustLog | quote }}
{{- if $V.config.namespace }}
- name: ALIEXPRESS_NAMESPACE
  value: {{ $V.config.namespace | quote }}
{{- end }}
{{- if has "database" $uses }}
{{ include "aliexpress.secretEnv" (dict "name" "DATABASE_URL" "secret" $secret) }}
{{- end }}
{{- if has "redis" $uses }}
{{ include "aliexpress.secretEnv" (dict "name" "REDIS_URL" "secret" $secret) }}
{{- if and $V.tls.redis.secretName $V.tls.redis.caFile }}
- name: REDIS_CA_FILE
  value: {{ printf "%s/%s" (include "aliexpress.tlsDir" "redis") $V.tls.redis.caFile | quote }}
{{- end }}
{{- end }}
{{- if has "opensearch" $uses }}
{{ include "aliexpress.secretEnv" (dict "name" "OPENSEARCH_URL" "secret" $secret) }}
{{ include "aliexpress.secretEnv" (dict "name" "OPENSEARCH_USERNAME" "secret" $secret "optional" true) }}
{{ include "aliexpress.secretEnv" (dict "name" "OPENSEARCH_PASSWORD" "secret" $secret "optional" true) }}
{{- if and $V.tls.opensearch.secretName $V.tls.opensearch.caFile }}
- name: OPENSEARCH_CA_FILE
  value: {{ printf "%s/%s" (include "aliexpress.tlsDir" "opensearch") $V.tls.opensearch.caFile | quote }}
{{- end }}
{{- end }}
{{- if has "kafka" $uses }}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required" $V.kafka.bootstrapServers | quote }}
{{- with $V.kafka.securityProtocol }}
- name: KAFKA_SECURITY_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- with $V.kafka.saslMechanism }}
- name: KAFKA_SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{ include "aliexpress.secretEnv" (dict "name" "KAFKA_SASL_USERNAME" "secret" $secret "optional" true) }}
{{ include "aliexpress.secretEnv" (dict "name" "KAFKA_SASL_PASSWORD" "secret" $secret "optional" true) }}
{{ include "aliexpress.secretEnv" (dict "name" "KAFKA_SSL_KEY_PASSWORD" "secret" $secret "optional" true) }}
{{- with $V.tls.kafka }}
{{- if .secretName }}
{{- $dir := include "aliexpress.tlsDir" "kafka" }}
{{- if .caFile }}
- name: KAFKA_SSL_CA_LOCATION
  value: {{ printf "%s/%s" $dir .caFile | quote }}
{{- end }}
{{- if .certFile }}
- name: KAFKA_SSL_CERTIFICATE_LOCATION
  value: {{ printf "%s/%s" $dir .certFile | quote }}
- name: KAFKA_SSL_KEY_LOCATION
  value: {{ printf "%s/%s" $dir .keyFile | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- range $k, $v := $V.kafka.properties }}
- name: {{ printf "KAFKA_PROPERTY_%s" ($k | replace "_" "__" | replace "." "_" | upper) }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}
{{- if has "tokens" $uses }}
{{ include "aliexpress.secretEnv" (dict "name" "API_TOKENS" "secret" $secret) }}
{{ include "aliexpress.secretEnv" (dict "name" "API_READ_TOKENS" "secret" $secret "optional" true) }}
{{- end }}
{{- with .role }}
{{- if .groupEnv }}
{{- $rv := index $V .key }}
{{- if $rv.group }}
- name: {{ .groupEnv }}
  value: {{ $rv.group | quote }}
{{- end }}
{{- if $rv.staticMembership }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: KAFKA_PROPERTY_GROUP_INSTANCE_ID
  value: "$(POD_NAME)"
{{- end }}
{{- end }}
{{- end }}
{{- range $k, $v := $V.env }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- with .values }}
{{- range $k, $v := .env }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}
{{- with $V.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Certificate volumes of the services in `uses`, plus /tmp: (dict "root" $ "uses" LIST). */}}
{{- define "aliexpress.volumes" -}}
{{- $V := .root.Values -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- range $svc := list "postgres" "kafka" "opensearch" "redis" }}
{{- $use := ternary "database" $svc (eq $svc "postgres") }}
{{- $t := index $V.tls $svc }}
{{- if and (has $use $.uses) $t.secretName }}
- name: tls-{{ $svc }}
  secret:
    secretName: {{ $t.secretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- with $V.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "aliexpress.volumeMounts" -}}
{{- $V := .root.Values -}}
- name: tmp
  mountPath: /tmp
{{- range $svc := list "postgres" "kafka" "opensearch" "redis" }}
{{- $use := ternary "database" $svc (eq $svc "postgres") }}
{{- $t := index $V.tls $svc }}
{{- if and (has $use $.uses) $t.secretName }}
- name: tls-{{ $svc }}
  mountPath: {{ include "aliexpress.tlsDir" $svc }}
  readOnly: true
{{- end }}
{{- end }}
{{- with $V.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Settings the chart refuses, with the reason. */}}
{{- define "aliexpress.validate" -}}
{{- $V := .Values }}
{{- with $V.tls.kafka }}
{{- if ne (empty .certFile) (empty .keyFile) }}
{{- fail "tls.kafka: certFile and keyFile go together (mutual TLS needs both)" }}
{{- end }}
{{- end }}
{{- if and (not $V.secret.existingSecret) $V.tls.postgres.secretName $V.secret.values.DATABASE_URL }}
{{- if not (contains (include "aliexpress.tlsDir" "postgres") $V.secret.values.DATABASE_URL) }}
{{- fail (printf "tls.postgres.secretName is set but DATABASE_URL names no file under %s (add sslrootcert=%s/ca.pem)" (include "aliexpress.tlsDir" "postgres") (include "aliexpress.tlsDir" "postgres")) }}
{{- end }}
{{- end }}
{{- range $r := include "aliexpress.roles" . | fromYamlArray }}
{{- $v := index $V $r.key }}
{{- if and $v.enabled (dig "keda" "enabled" false $v) }}
{{- if and (include "aliexpress.kafkaUsesSasl" $) (not (include "aliexpress.kedaSasl" $)) (not $v.keda.authenticationRef) }}
{{- fail (printf "%s.keda: KEDA's Kafka scaler has no mode for KAFKA_SASL_MECHANISM %q; give %s.keda.authenticationRef" $r.key $V.kafka.saslMechanism $r.key) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
