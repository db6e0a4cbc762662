{{/*
Rules on namespaced objects, shared by the ClusterRole (cluster-wide) and each Role (namespaced).
They mirror kretrain.operator.kube.API_CALLS (tests/test_rbac.py fails when they differ).
Argument: (list $root $namespacedPeering) where $namespacedPeering is non-empty when namespaced
kopf peering objects are used.
*/}}
{{- define "kretrain.namespacedRules" -}}
{{- $root := index . 0 -}}
{{- $peering := index . 1 -}}
# RetrainJobs: kopf lists/watches them and patches finalizers and annotations; RetrainSchedules create
# their runs and delete old ones (history limits, concurrencyPolicy Replace).
- apiGroups: [kretrain.dev]
  resources: [retrainjobs]
  verbs: [list, watch, patch, create, delete]
# RetrainSchedules: kopf lists/watches them and patches finalizers and annotations.
- apiGroups: [kretrain.dev]
  resources: [retrainschedules]
  verbs: [list, watch, patch]
# The status written by the schedule handlers.
- apiGroups: [kretrain.dev]
  resources: [retrainschedules/status]
  verbs: [patch]
# Not an API call: a schedule's RetrainJobs carry an ownerReference with blockOwnerDeletion (see below).
- apiGroups: [kretrain.dev]
  resources: [retrainschedules/finalizers]
  verbs: [update]
# The status written by the handlers.
- apiGroups: [kretrain.dev]
  resources: [retrainjobs/status]
  verbs: [patch]
# Not an API call: the Job and ConfigMap carry an ownerReference with blockOwnerDeletion to their
# RetrainJob, which clusters with the OwnerReferencesPermissionEnforcement admission plugin
# (e.g. OpenShift) allow only to who may update the owner's finalizers.
- apiGroups: [kretrain.dev]
  resources: [retrainjobs/finalizers]
  verbs: [update]
# The training Job of each RetrainJob: found by label, polled, created once, suspended by patch.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, create, patch]
# The resolved spec and stage key, mounted into the training pod (deleted with its RetrainJob by owner
# reference); get: the stage key read back to check the MAC of the run's report.json before concluding it.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create]
# resources.nodes > 1: the headless Service giving the training pods DNS names for torchrun's
# rendezvous (deleted with its RetrainJob by owner reference).
- apiGroups: [""]
  resources: [services]
  verbs: [create]
{{- if ne ($root.Values.config.multiNode | default "indexedjob") "indexedjob" }}
# config.multiNode trainjob or auto: the Kubeflow Trainer TrainJob of a run with resources.nodes > 1, found by
# label, polled, created once, suspended by patch (deleted with its RetrainJob by owner reference).
- apiGroups: [trainer.kubeflow.org]
  resources: [trainjobs]
  verbs: [get, list, create, patch]
{{- end }}
# The training pods, read-only: the failed pod's termination message.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Events about each RetrainJob (kopf's handler events and the promotion decision).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# KServe InferenceServices named in spec.serving.inferenceService: their predictor's storageUri is
# merge-patched to the promoted version (nothing else is read or written).
- apiGroups: [serving.kserve.io]
  resources: [inferenceservices]
  verbs: [patch]
{{- with $root.Values.policy.allowedWebhookSecrets }}
# The HMAC key of spec.serving.webhook: only the Secrets policy.allowedWebhookSecrets names.
- apiGroups: [""]
  resources: [secrets]
  resourceNames: {{ toJson . }}
  verbs: [get]
{{- end }}
{{- if $peering }}
# kopf: peering between operator replicas in this namespace.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}
