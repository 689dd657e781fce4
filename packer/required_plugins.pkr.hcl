# Read by Packer >= 1.7 only (`packer init packer/`); Packer 1.6 has these built in and
# rejects this block, so mlbatch hands it packer/mlbatch.pkr.hcl alone.
packer {
  required_version = ">= 1.6.6"
  required_plugins {
    docker = {
      source  = "github.com/hashicorp/docker"
      version = ">= 1.0.8"
    }
    googlecompute = {
      source  = "github.com/hashicorp/googlecompute"
      version = ">= 1.1.1"
    }
    ansible = {
      source  = "github.com/hashicorp/ansible"
      version = ">= 1.1.0"
    }
  }
}
