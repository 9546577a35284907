"""Node to node: agent inputs forwarded to a battle's owner, owner changes announced."""
