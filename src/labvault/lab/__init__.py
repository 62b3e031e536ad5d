"""The lab's daily work: catalogue, requests, specimens, results, validation, reports."""
