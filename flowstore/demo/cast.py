"""The story's fixed names and data: the organizations, the queue, the node and the traffic."""

from __future__ import annotations

ORG_SLUG = "acme-robotics"
NEIGHBOUR_SLUG = "globex-labs"
DEMO_QUEUE = "demo-rollouts"
NODE_ID = "node-us-east-1a"

# (model, prompt tokens, completion tokens, cost in USD, latency in ms, status, user email)
TRAFFIC: tuple[tuple[str, int, int, str, int, str, str], ...] = (
    ("llama-3-8b-instruct", 412, 128, "0.000540", 380, "success", "ada@acme-robotics.example"),
    ("llama-3-8b-instruct", 1024, 512, "0.001536", 910, "success", "ada@acme-robotics.example"),
    ("mistral-7b-instruct", 256, 64, "0.000224", 240, "success", "grace@acme-robotics.example"),
    ("llama-3-8b-instruct", 2048, 0, "0.001434", 1500, "timeout", "grace@acme-robotics.example"),
    ("mistral-7b-instruct", 96, 300, "0.000396", 310, "success", "ada@acme-robotics.example"),
)
