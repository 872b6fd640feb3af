#!/usr/bin/env python3
"""Pod discovery for the local cluster's Prometheus.

Debian's Prometheus is built without Kubernetes service discovery (its Go client is not packaged
in Debian), so this does the part tether needs, with the cluster's kubeconfig: every two seconds
it lists the pods and writes the containers' ports named `tether-metrics` as a file_sd target
list, labelled as `kubernetes_sd_configs` (role: pod) plus the relabelling in
deploy/monitoring would label them (namespace, pod, container). Prometheus reloads the file when
it changes.

Usage: prometheus-sd.py KUBECONFIG TARGETS_JSON
"""

import json
import os
import subprocess
import sys
import time

PORT_NAME = "tether-metrics"


def targets(pods):
    out = []
    for pod in pods.get("items", []):
        meta, spec, status = pod["metadata"], pod.get("spec", {}), pod.get("status", {})
        ip = status.get("podIP")
        if not ip or status.get("phase") != "Running" or meta.get("deletionTimestamp"):
            continue
        for container in spec.get("containers", []):
            for port in container.get("ports", []):
                if port.get("name") == PORT_NAME:
                    out.append({
                        "targets": [f"{ip}:{port['containerPort']}"],
                        "labels": {
                            "namespace": meta["namespace"],
                            "pod": meta["name"],
                            "container": container["name"],
                        },
                    })
    out.sort(key=lambda t: t["targets"][0])
    return out


def main():
    kubeconfig, path = sys.argv[1], sys.argv[2]
    last = None
    while True:
        listed = subprocess.run(
            ["kubectl", "--kubeconfig", kubeconfig, "get", "pods", "-A", "-o", "json"],
            capture_output=True, text=True,
        )
        if listed.returncode == 0:
            text = json.dumps(targets(json.loads(listed.stdout)), indent=1)
            if text != last:
                tmp = path + ".tmp"
                with open(tmp, "w") as f:
                    f.write(text)
                os.replace(tmp, path)
                last = text
        time.sleep(2)


if __name__ == "__main__":
    main()
