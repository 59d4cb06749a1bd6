"""``sidecars inject``: manifests in -> workloads found -> sidecars wired in -> manifests out.

documents.py splits and round-trips the YAML stream, workloads.py finds Pod templates,
template.py reads the wiring generated from k8s/pod.yaml, wiring.py adds (and removes) it,
envs.py routes and validates ``--env``, nginx_conf.py is the conf.d file nginx needs,
main.py is the only place with I/O.
"""
