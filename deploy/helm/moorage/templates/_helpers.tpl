{{- define "moorage.name" -}}{{ .Chart.Name }}{{- end -}}

{{- define "moorage.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "moorage.labels" -}}
app.kubernetes.io/name: {{ include "moorage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "moorage.selector" -}}
app.kubernetes.io/name: {{ include "moorage.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "moorage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "moorage.fullname" .) .Values.serviceAccount.name }}
{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{- define "moorage.authSecret" -}}
{{- default (printf "%s-auth" (include "moorage.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "moorage.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}

{{- define "moorage.sidecarReplicas" -}}
{{- if eq .Values.sidecar.store.type "sqlite" -}}1{{- else -}}{{ .Values.sidecar.replicas }}{{- end -}}
{{- end -}}

{{- define "moorage.sidecarHost" -}}
{{- printf "%s-sidecar.%s.svc" (include "moorage.fullname" .) .Release.Namespace -}}
{{- end -}}

{{/* The DTS connection string workers use: the sidecar's Service, or Azure DTS with workload identity. */}}
{{- define "moorage.connectionString" -}}
{{- if eq .Values.backend "dts" -}}
{{- required "dts.endpoint is required with backend: dts" .Values.dts.endpoint | printf "Endpoint=%s" -}};Authentication={{ .Values.dts.authentication }}{{ if and .Values.workloadIdentity.clientId (ne .Values.dts.authentication "DefaultAzure") }};ClientID={{ .Values.workloadIdentity.clientId }}{{ end }};TaskHub={{ .Values.dts.taskHub }}
{{- else -}}
Endpoint=http://{{ include "moorage.sidecarHost" . }}:8080;Authentication=None;TaskHub={{ first .Values.sidecar.taskHubs }}
{{- end -}}
{{- end -}}

{{- define "moorage.podSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 65532
  runAsGroup: 65532
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "moorage.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end -}}
