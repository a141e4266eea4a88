#!/usr/bin/python3
"""Reads `docker-compose config` (docker-compose.yml merged with compose.host.yml) on stdin and
writes it for host networking: published ports dropped (they mean nothing on the host's network,
and docker-compose refuses them there) and the services of other profiles left out, so that no
service needs a container network. Runs with the Python that docker-compose itself runs on."""
import sys

import yaml

config = yaml.safe_load(sys.stdin)
services = config["services"]
for name in [n for n, s in services.items() if s.get("profiles")]:
    del services[name]
for service in services.values():
    service.pop("ports", None)
    assert service.get("network_mode") == "host", "every service must use the host's network"
config.pop("networks", None)
yaml.safe_dump(config, sys.stdout, sort_keys=False)
