"""The market's consensus side (runs inside blocks): the rules of offer,
withdraw, demand, close and contract call/admin (rules), their body schemas
(schema), matching and trust (matching) and the field checks of offers
(directory)."""
