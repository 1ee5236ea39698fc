{{/* The release's full name, used for every object of the chart. */}}
{{- define "larder.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "larder.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: larder
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "larder.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "larder.serviceAccountName" -}}
{{- default (include "larder.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "larder.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Rules the operator needs in every namespace it watches: exactly the calls it makes
(kopf's watches, our reads, server-side applies, status patches, Events). It deletes only
a PodDisruptionBudget a function no longer needs: the garbage collector removes a deleted
function's children through their owner references. */}}
{{- define "larder.namespacedRules" -}}
- apiGroups: [larder.dev]
  resources: [statefulfunctions, journals]
  verbs: [get, list, watch, patch]
- apiGroups: [larder.dev]
  resources: [statefulfunctions/status, journals/status]
  verbs: [patch]
# Children carry blockOwnerDeletion, which clusters enforcing owner-reference
# permissions allow only to who may update the owner's finalizers.
- apiGroups: [larder.dev]
  resources: [statefulfunctions/finalizers]
  verbs: [update]
# The children of each StatefulFunction, server-side applied (create + patch). Deployments
# are also read and watched (readiness), Services watched (drift).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch, create, patch]
# Listed only when a Deployment reports a ReplicaFailure, to tell its current ReplicaSet's
# failure (news for status) from an old one's.
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create, patch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create, patch]
# A PodDisruptionBudget for each function with more than one replica (server-side
# applied); read, and deleted if the function owns it, when scaled to one replica or none.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, create, patch, delete]
# Held so the operator may grant it to the sidecars' Roles (RBAC forbids granting more):
# membership watches the functions' EndpointSlices.
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
# Only to read a Journal's Cassandra login (the reachability check, and a function's check
# that the Secret exists before its pods need it); get by name, never listed or watched.
# Cluster-wide without watchNamespaces: resourceNames cannot follow the Journals' Secrets,
# and RBAC forbids the operator granting itself per-Secret Roles it does not already hold
# (docs/operator.md, "RBAC"). Kafka Secrets are never read: the kubelet mounts them.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# kopf posts core/v1 Events.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end -}}
