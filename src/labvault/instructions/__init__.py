"""A lab's documented instructions to its processor (GDPR Art. 28(3)(a)): parse, sign, verify, compare."""
