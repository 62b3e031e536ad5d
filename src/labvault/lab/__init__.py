"""The lab's daily work: test catalogue, requests and specimens, validation, labels and reports."""
