{{/* Names, labels and small shared pieces of the mcp-fleet chart. */}}

{{- define "mcp-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mcp-fleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mcp-fleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Labels of every object; the component ("operator", "router") is passed in. */}}
{{- define "mcp-fleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "mcp-fleet.selectorLabels" . }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels. part-of and component are what server NetworkPolicies let in. */}}
{{- define "mcp-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mcp-fleet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/part-of: mcp-fleet
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mcp-fleet.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "mcp-fleet.fullname" .)) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "mcp-fleet.routerServiceAccount" -}}
{{- default (printf "%s-router" (include "mcp-fleet.fullname" .)) .Values.router.serviceAccount.name }}
{{- end }}

{{/* Namespaces the operator (and router) watch: the list, or the release namespace. */}}
{{- define "mcp-fleet.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- join "," .Values.operator.watchNamespaces }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "mcp-fleet.routerSecretName" -}}
{{- default (printf "%s-router-token" (include "mcp-fleet.fullname" .)) .Values.router.auth.existingSecret }}
{{- end }}

{{- define "mcp-fleet.routerSessionSecretName" -}}
{{- default (printf "%s-router-session" (include "mcp-fleet.fullname" .)) .Values.router.sessionKey.existingSecret }}
{{- end }}

{{/* The hardened container security context shared by the operator and the router. */}}
{{- define "mcp-fleet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{- define "mcp-fleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}
