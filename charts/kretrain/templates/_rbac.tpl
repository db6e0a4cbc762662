{{/*
Rules on namespaced objects, shared by the ClusterRole (cluster-wide) and each Role (namespaced).
Argument: (list $root $namespacedPeering) where $namespacedPeering is non-empty when namespaced
kopf peering objects are used.
*/}}
{{- define "kretrain.namespacedRules" -}}
{{- $peering := index . 1 -}}
# RetrainJobs: kopf watches them and patches finalizers/annotations; the operator writes the status.
- apiGroups: [kretrain.dev]
  resources: [retrainjobs]
  verbs: [get, list, watch, patch]
- apiGroups: [kretrain.dev]
  resources: [retrainjobs/status]
  verbs: [get, patch]
# The training Job of each RetrainJob: created once, watched to completion, suspended by patch.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
# The training pods: read-only, for the termination message and logs of a failed run.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# Events about each RetrainJob (kopf's own and the promotion decision).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if $peering }}
# kopf: peering between operator replicas in this namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}
