"""BCCL (Balanced Clustering Contrastive Learning), as released: losses, queues, k-means, method."""
