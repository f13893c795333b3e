{{/*
Names, labels and small renderers shared by every template. All defines are prefixed
"kubetune." so they cannot collide with a parent chart's.
*/}}

{{/* Chart name, overridable. */}}
{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Base of object names: "<release>-<chart>", or the release name alone if it already contains the chart name. */}}
{{- define "kubetune.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "kubetune.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select the operator pod; never change them after a release (selectors are immutable). */}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Standard labels of every object the chart renders. */}}
{{- define "kubetune.labels" -}}
helm.sh/chart: {{ include "kubetune.chart" . }}
{{ include "kubetune.selectorLabels" . }}
app.kubernetes.io/part-of: kubetune
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kubetune.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kubetune.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Image reference from {repository, tag, digest}: "repo:tag", or "repo:tag@sha256:..." when pinned by digest.
With global.imageRegistry set, the repository's registry host (a first path component with a "." or
":", or "localhost") is replaced by it: ghcr.io/kubetune/operator -> <imageRegistry>/kubetune/operator,
the name `make images REGISTRY=<imageRegistry> PUSH=1` pushes to.
Call with (dict "image" .Values.x.image "context" $).
*/}}
{{- define "kubetune.image" -}}
{{- $tag := default .context.Chart.AppVersion .image.tag -}}
{{- $repository := .image.repository -}}
{{- $registry := (.context.Values.global).imageRegistry | default "" | trimSuffix "/" -}}
{{- if $registry -}}
{{- $parts := splitList "/" $repository -}}
{{- $host := first $parts -}}
{{- if and (gt (len $parts) 1) (or (contains "." $host) (contains ":" $host) (eq $host "localhost")) -}}
{{- $repository = rest $parts | join "/" -}}
{{- end -}}
{{- $repository = printf "%s/%s" $registry $repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s:%s@%s" $repository $tag .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Pull secrets of the operator's pod: imagePullSecrets (every pod) + operator.imagePullSecrets. */}}
{{- define "kubetune.operatorPullSecrets" -}}
{{- concat .Values.imagePullSecrets .Values.operator.imagePullSecrets | uniq | toJson -}}
{{- end -}}

{{/* Ports the operator process listens on; fixed by `kubetune operator`, not configurable. */}}
{{- define "kubetune.healthPort" -}}8080{{- end -}}
{{- define "kubetune.metricsPort" -}}9090{{- end -}}

{{/* RBAC rules generated from operator/kubetune/rbac.py by `make manifests` (kubetune.chartgen). */}}
{{- define "kubetune.rbacRules" -}}
{{- $rules := .Files.Get "files/rbac-rules.yaml" | fromYaml -}}
{{- if or (not $rules) (hasKey $rules "Error") -}}
{{- fail "files/rbac-rules.yaml is missing or invalid: run `make manifests`" -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
