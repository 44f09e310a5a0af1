"""The paper profiles rehearsed on a CPU against local stand-ins (make rehearse-paper)."""
