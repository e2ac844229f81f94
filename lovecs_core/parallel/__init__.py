"""Several processes under torchrun: the process group and what ranks share."""
