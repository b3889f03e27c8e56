{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "spindle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name used as the prefix of every namespaced object. */}}
{{- define "spindle.fullname" -}}
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

{{/*
Name for cluster-scoped objects (ClusterRole, ClusterRoleBinding). It carries
the release namespace so that two releases with the same name in different
namespaces do not collide.
*/}}
{{- define "spindle.clusterName" -}}
{{- printf "%s-%s" (include "spindle.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spindle.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pods; never change them across versions. */}}
{{- define "spindle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spindle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "spindle.labels" -}}
helm.sh/chart: {{ include "spindle.chart" . }}
app.kubernetes.io/name: {{ include "spindle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: spindle
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "spindle.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "spindle.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "spindle.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Namespace the leader-election Lease lives in (always the release namespace). */}}
{{- define "spindle.leaseNamespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{/*
Cross-value checks the JSON schema cannot express. Included from the
Deployment so that they run on every render.
*/}}
{{- define "spindle.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.operator.leaderElection.enabled) }}
{{- fail "replicas > 1 requires operator.leaderElection.enabled=true: two operators without a leader would both reconcile every SpinApp" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled requires metrics.service.enabled (the ServiceMonitor scrapes the metrics Service)" }}
{{- end }}
{{- if and .Values.executor.create (not .Values.executor.namespaces) }}
{{- fail "executor.create=true needs at least one namespace in executor.namespaces" }}
{{- end }}
{{- end }}

{{/* Labels that select the activator pods; never change them across versions. */}}
{{- define "spindle.activator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "spindle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: activator
{{- end }}

{{/* Name of the activator's objects (its Service is what the operator reads). */}}
{{- define "spindle.activator.fullname" -}}
{{- printf "%s-activator" (include "spindle.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "spindle.activator.serviceAccountName" -}}
{{- if .Values.activator.serviceAccount.create }}
{{- default (include "spindle.activator.fullname" .) .Values.activator.serviceAccount.name }}
{{- else }}
{{- required "activator.serviceAccount.name is required when activator.serviceAccount.create is false" .Values.activator.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* First and last port of activator.portRange ("first-last"). */}}
{{- define "spindle.activator.ports" -}}
{{- $r := splitList "-" .Values.activator.portRange }}
{{- if or (ne (len $r) 2) (gt (int (index $r 0)) (int (index $r 1))) }}
{{- fail "activator.portRange must be first-last with first <= last, e.g. 20000-29999" }}
{{- end }}
{{- index $r 0 }} {{ index $r 1 }}
{{- end }}
