"""A compact JSON schema of the KubeRay ray.io/v1 fields rayinfra's manifests use.

No CRD is available offline, so this is written from KubeRay's API reference (v1.5 to
v1.6: RayCluster, RayJob, RayService). It lists the documented fields of each object
the manifests touch, with their types and enums, and forbids unknown keys there, so a
typo or a wrong type (e.g. a number in rayStartParams, a map[string]string) fails.
Pod templates are checked only for what Kubernetes requires of a container.
"""

from __future__ import annotations

from typing import Any

STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
NON_NEG_INT = {"type": "integer", "minimum": 0}

# Kubernetes' SecurityContext fields: a misspelt one would silently leave the default.
CONTAINER_SECURITY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "allowPrivilegeEscalation": {"type": "boolean"},
        "capabilities": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "add": {"type": "array", "items": {"type": "string"}},
                "drop": {"type": "array", "items": {"type": "string"}},
            },
        },
        "privileged": {"type": "boolean"},
        "readOnlyRootFilesystem": {"type": "boolean"},
        "runAsNonRoot": {"type": "boolean"},
        "runAsUser": {"type": "integer"},
        "runAsGroup": {"type": "integer"},
        "seccompProfile": {"type": "object"},
        "appArmorProfile": {"type": "object"},
        "seLinuxOptions": {"type": "object"},
        "procMount": {"type": "string"},
    },
}
POD_SECURITY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "runAsNonRoot": {"type": "boolean"},
        "runAsUser": {"type": "integer"},
        "runAsGroup": {"type": "integer"},
        "fsGroup": {"type": "integer"},
        "fsGroupChangePolicy": {"enum": ["OnRootMismatch", "Always"]},
        "supplementalGroups": {"type": "array", "items": {"type": "integer"}},
        "seccompProfile": {
            "type": "object",
            "properties": {"type": {"enum": ["RuntimeDefault", "Localhost", "Unconfined"]}},
        },
        "appArmorProfile": {"type": "object"},
        "seLinuxOptions": {"type": "object"},
        "sysctls": {"type": "array"},
    },
}
CONTAINER = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "image": {"type": "string", "minLength": 1},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        "envFrom": {"type": "array", "items": {"type": "object"}},
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {"containerPort": {"type": "integer"}},
            },
        },
        "volumeMounts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "mountPath"],
                "properties": {"name": {"type": "string"}, "mountPath": {"type": "string"}},
            },
        },
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"requests": {"type": "object"}, "limits": {"type": "object"}, "claims": {"type": "array"}},
        },
        "securityContext": CONTAINER_SECURITY,
    },
}
POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": {"type": "object", "properties": {"labels": STR_MAP, "annotations": STR_MAP}},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                "volumes": {"type": "array"},
                "securityContext": POD_SECURITY,
                "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
            },
        },
    },
}
HEAD_GROUP = {
    "type": "object",
    "required": ["template"],
    "additionalProperties": False,
    "properties": {
        "rayStartParams": STR_MAP,
        "template": POD_TEMPLATE,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "headService": {"type": "object"},
        "enableIngress": {"type": "boolean"},
        "headPodLabelSelector": STR_MAP,
    },
}
WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "template"],
    "additionalProperties": False,
    "properties": {
        "groupName": {"type": "string", "minLength": 1},
        "replicas": NON_NEG_INT,
        "minReplicas": NON_NEG_INT,
        "maxReplicas": NON_NEG_INT,
        "numOfHosts": {"type": "integer", "minimum": 1},
        "idleTimeoutSeconds": NON_NEG_INT,
        "suspend": {"type": "boolean"},
        "rayStartParams": STR_MAP,
        "template": POD_TEMPLATE,
        "scaleStrategy": {"type": "object"},
    },
}
RAY_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec"],
    "additionalProperties": False,
    "properties": {
        "rayVersion": {"type": "string"},
        "authOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"mode": {"enum": ["disabled", "token"]}, "secretName": {"type": "string"}},
        },
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "idleTimeoutSeconds": NON_NEG_INT,
                "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
                "version": {"enum": ["v1", "v2"]},
                "resources": {"type": "object"},
                "image": {"type": "string"},
                "imagePullPolicy": {"type": "string"},
                "env": {"type": "array"},
                "envFrom": {"type": "array"},
                "securityContext": CONTAINER_SECURITY,
                "volumeMounts": {"type": "array"},
            },
        },
        "headGroupSpec": HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
        "headServiceAnnotations": STR_MAP,
        "gcsFaultToleranceOptions": {"type": "object"},
        "suspend": {"type": "boolean"},
        "managedBy": {"type": "string"},
    },
}
RAY_JOB_SPEC = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["rayClusterSpec"]}, {"required": ["clusterSelector"]}],
    "properties": {
        "entrypoint": {"type": "string", "minLength": 1},
        "entrypointNumCpus": {"type": "number"},
        "entrypointNumGpus": {"type": "number"},
        "entrypointResources": {"type": "string"},
        "runtimeEnvYAML": {"type": "string"},
        "metadata": STR_MAP,
        "jobId": {"type": "string"},
        "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
        "shutdownAfterJobFinishes": {"type": "boolean"},
        "ttlSecondsAfterFinished": NON_NEG_INT,
        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
        "backoffLimit": NON_NEG_INT,
        "suspend": {"type": "boolean"},
        "rayClusterSpec": RAY_CLUSTER_SPEC,
        "clusterSelector": STR_MAP,
        "submitterPodTemplate": POD_TEMPLATE,
        "submitterConfig": {"type": "object"},
        "deletionStrategy": {"type": "object"},
        "managedBy": {"type": "string"},
    },
}
RAY_SERVICE_SPEC = {
    "type": "object",
    "required": ["serveConfigV2", "rayClusterConfig"],
    "additionalProperties": False,
    "properties": {
        "serveConfigV2": {"type": "string", "minLength": 1},
        "rayClusterConfig": RAY_CLUSTER_SPEC,
        "upgradeStrategy": {
            "type": "object",
            "properties": {"type": {"enum": ["NewCluster", "None", "NewClusterWithIncrementalUpgrade"]}},
        },
        "excludeHeadPodFromServeSvc": {"type": "boolean"},
        "serveService": {"type": "object"},
        "rayClusterDeletionDelaySeconds": NON_NEG_INT,
    },
}
SPECS = {"RayCluster": RAY_CLUSTER_SPEC, "RayJob": RAY_JOB_SPEC, "RayService": RAY_SERVICE_SPEC}


def schema_for(kind: str) -> dict[str, Any]:
    """The schema of a whole ray.io/v1 object of ``kind``."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
                },
            },
            "spec": SPECS[kind],
        },
    }
