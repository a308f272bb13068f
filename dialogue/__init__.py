"""dialogue: intent, top-agent playbook, grounded reply suggestions, guardrails (issue #3)."""
