#!/usr/bin/env python3
"""The Python/boto3 peer of one orchestrator function, for `make bench`.

What a user would otherwise write (AWS's own samples for lifecycle hooks and SSM orchestration
are Python/boto3): at start it builds the boto3 clients the Rust function builds
(PEER_CLIENTS), then it serves the Lambda Runtime API and answers every event with the same
AWS calls the Rust function makes for it (PEER_CALLS: a list of client, operation, params).
The runtime loop is the few lines of the managed Python runtime's bootstrap that matter, so the managed
runtime's own start-up (which would add to Python's side) is not counted.
"""

import json
import os
import urllib.request

import boto3
from botocore.config import Config

# Path-style S3 when an endpoint is set, as the Rust side does for the local cloud.
S3_CONFIG = Config(s3={"addressing_style": "path"}) if os.environ.get("AWS_ENDPOINT_URL") else None

CLIENTS = {
    name: boto3.client(name, config=S3_CONFIG if name == "s3" else None)
    for name in os.environ["PEER_CLIENTS"].split(",")
}
CALLS = json.loads(os.environ["PEER_CALLS"])
API = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"


def handle(event):
    items = 0
    for call in CALLS:
        answer = getattr(CLIENTS[call["client"]], call["operation"])(**call["params"])
        items += len(answer.get("Items", [])) + ("Item" in answer)
    return {"ok": True, "items": items}


def main():
    while True:
        with urllib.request.urlopen(API + "next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(response.read())
        body = json.dumps(handle(event)).encode()
        request = urllib.request.Request(API + request_id + "/response", data=body, method="POST")
        urllib.request.urlopen(request).read()


if __name__ == "__main__":
    main()
