"""The baselines BCCL is compared with: CE, BCL and PaCo, one module each."""
