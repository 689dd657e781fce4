# The mlbatch VM image: one build over two sources with the same Ansible provisioner.
#   googlecompute.vm  -> a GCE image in family var.image_family (gcp profile)
#   docker.local      -> a Docker image of the same roles (local profile)
# mlbatch.release.bake passes every variable; `packer validate` works with the defaults.
# Validations stay structural: Packer 1.6 has no regex functions in validation blocks,
# and mlbatch checks the exact forms before Packer runs.
# Packer >= 1.7 also reads required_plugins.pkr.hcl beside this file (packer init);
# Packer 1.6 has the plugins built in and is given this file alone.

variable "version" {
  type        = string
  description = "Release version (git tag) baked into /etc/mlbatch-release."
  default     = "v0.0.0-dev"
  validation {
    condition     = substr(var.version, 0, 1) == "v" && length(split(".", var.version)) >= 3
    error_message = "The version must be a semver git tag such as v1.4.0 or v1.4.0-rc.1."
  }
}

variable "image_name" {
  type        = string
  description = "Name of the image: mlbatch-<version slug>-<UTC timestamp>."
  default     = "mlbatch-v0-0-0-dev"
  validation {
    condition     = lower(var.image_name) == var.image_name && length(var.image_name) <= 63 && length(split(" ", var.image_name)) == 1
    error_message = "The image_name must be a GCE name: [a-z]([-a-z0-9]{0,61}[a-z0-9])?."
  }
}

variable "image_family" {
  type        = string
  description = "GCE image family that run-batch resolves at release time."
  default     = "mlbatch"
}

variable "git_sha" {
  type        = string
  description = "Commit the release was built from."
  default     = "unknown"
}

variable "input_hash" {
  type        = string
  description = "sha256 of packer/, ansible/ and the agent source: an identical bake may be skipped."
  default     = "none"
}

variable "agent_wheel" {
  type        = string
  description = "Path to this version's mlbatch wheel, installed as the agent."
  default     = "dist/mlbatch.whl"
}

variable "agent_wheel_sha256" {
  type        = string
  description = "sha256 of agent_wheel: pip installs it only with this hash; the image records it for the release's manifest."
  default     = "0000000000000000000000000000000000000000000000000000000000000000"
  validation {
    condition     = length(var.agent_wheel_sha256) == 64
    error_message = "The agent_wheel_sha256 must be 64 hex digits."
  }
}

variable "ca_bundle" {
  type        = string
  description = "Extra CA bundle to trust inside the image (TLS proxies); empty for none."
  default     = ""
}

variable "gpu" {
  type        = bool
  description = "Bake the GPU image: Ansible's gpu role adds the NVIDIA driver (and the container toolkit where a repository carries it)."
  default     = false
}

variable "manifest_path" {
  type        = string
  description = "Where the manifest post-processor writes the artifact for the next step."
  default     = "packer-manifest.json"
}

# --- docker (local profile) ---
variable "base_image" {
  type        = string
  description = "Base Docker image of the local bake."
  default     = "debian:bookworm-slim"
}

variable "prepull_images" {
  type        = list(string)
  description = "The release's containers (repository@sha256:digest) pulled into the image, so a run does not pull at boot."
  default     = []
  validation {
    condition     = length([for ref in var.prepull_images : ref if length(split("@sha256:", ref)) != 2]) == 0
    error_message = "Each of prepull_images must be pinned by digest: repository@sha256:<digest>."
  }
}

# --- googlecompute (gcp and test profiles; mlbatch.release.gce_image passes them all) ---
variable "project_id" {
  type        = string
  description = "GCP project that owns the image."
  default     = "mlbatch-validate"
}

variable "zone" {
  type        = string
  description = "Zone of the temporary build VM."
  default     = "europe-west4-a"
  validation {
    condition     = length(split("-", var.zone)) == 3
    error_message = "The zone must be a GCE zone such as europe-west4-a."
  }
}

variable "source_image_family" {
  type        = string
  description = "Public image family the GCE bake starts from, when source_image is empty."
  default     = "debian-12"
}

variable "source_image" {
  type        = string
  description = "The image of source_image_family the release resolved (and hashed): the bake starts from exactly it. Empty: the family's newest."
  default     = ""
}

variable "shielded_vm" {
  type        = bool
  description = "Boot the build VM as a Shielded VM (Secure Boot, vTPM, integrity monitoring): the source image must be UEFI-compatible (debian-12 is)."
  default     = true
}

variable "source_image_project" {
  type        = string
  description = "Project that publishes source_image_family."
  default     = "debian-cloud"
}

variable "machine_type" {
  type        = string
  description = "Machine type of the temporary build VM."
  default     = "e2-standard-2"
}

variable "network" {
  type        = string
  description = "VPC network of the build VM (name or self link)."
  default     = "default"
}

variable "subnetwork" {
  type        = string
  description = "Subnetwork of the build VM; empty for the network's auto subnet. Needs Private Google Access or Cloud NAT."
  default     = ""
}

variable "service_account_email" {
  type        = string
  description = "Service account of the build VM; empty for the project's default."
  default     = ""
}

variable "use_iap" {
  type        = bool
  description = "Connect through an IAP tunnel (needs gcloud where Packer runs); false: to the build VM's internal address."
  default     = false
}

variable "use_os_login" {
  type        = bool
  description = "Log in with OS Login (Packer imports its key into the caller's login profile): needed where the org policy compute.requireOsLogin makes VMs ignore ssh-keys metadata."
  default     = false
}

variable "ssh_port" {
  type        = number
  description = "Port of the build VM's sshd."
  default     = 22
  validation {
    condition     = var.ssh_port > 0 && var.ssh_port < 65536
    error_message = "The ssh_port must be a TCP port (1-65535)."
  }
}

locals {
  # GCE label values: lowercase, [a-z0-9_-], at most 63 characters.
  labels = {
    managed-by = "mlbatch"
    version    = lower(replace(var.version, ".", "-"))
    git-sha    = substr(var.git_sha, 0, 40)
    input-hash = substr(var.input_hash, 0, 63)
  }
}

source "googlecompute" "vm" {
  project_id              = var.project_id
  zone                    = var.zone
  source_image            = var.source_image # takes precedence over the family when set
  source_image_family     = var.source_image_family
  source_image_project_id = [var.source_image_project]
  image_name              = var.image_name
  image_family            = var.image_family
  image_labels            = local.labels
  # The wheel's sha256 is 64 digits, one more than a label value holds: it rides in the description.
  image_description     = "mlbatch ${var.version} ${var.git_sha} agent-wheel-sha256:${var.agent_wheel_sha256}"
  machine_type          = var.machine_type
  network               = var.network
  subnetwork            = var.subnetwork
  service_account_email = var.service_account_email
  # The build VM's token needs no API but an Artifact Registry pull (read-only storage scope);
  # not the default scopes, which add full Compute and Storage control.
  scopes = ["https://www.googleapis.com/auth/devstorage.read_only"]
  # Only Packer's own throw-away key logs in: no project-wide key reaches the build VM.
  metadata = {
    block-project-ssh-keys = "true"
  }
  enable_secure_boot          = var.shielded_vm
  enable_vtpm                 = var.shielded_vm
  enable_integrity_monitoring = var.shielded_vm
  disk_size                   = 20
  # No external IP: Packer reaches the VM by its internal address, or through IAP. The
  # googlecompute builder requires use_internal_ip with omit_external_ip, whatever the
  # path; with use_iap the tunnel's local end replaces the address anyway.
  omit_external_ip = true
  use_internal_ip  = true
  use_iap          = var.use_iap
  use_os_login     = var.use_os_login
  ssh_username     = "packer"
  ssh_port         = var.ssh_port
  # Debian 12's OpenSSH refuses the SHA-1 signatures of Packer 1.6's RSA keys.
  temporary_key_pair_type = "ed25519"
}

source "docker" "local" {
  image  = var.base_image
  pull   = false
  commit = true
  # The commit would keep the base image's /bin/sh entry point: make the agent the
  # entry point, as systemd starts it on a VM.
  changes = [
    "ENTRYPOINT [\"/opt/mlbatch/venv/bin/mlbatch-agent\"]",
    "CMD []",
    "LABEL org.mlbatch.image-name=${var.image_name}",
    "LABEL org.mlbatch.version=${var.version}",
    "LABEL org.mlbatch.git-sha=${var.git_sha}",
    "LABEL org.mlbatch.input-hash=${var.input_hash}",
    "LABEL org.mlbatch.agent-wheel-sha256=${var.agent_wheel_sha256}",
  ]
}

build {
  sources = ["source.googlecompute.vm", "source.docker.local"]

  provisioner "ansible" {
    playbook_file = "${path.root}/../ansible/playbook.yml"
    # Packer's SSH proxy offers only ssh-rsa host keys, which current OpenSSH refuses.
    extra_arguments = [
      "--ssh-extra-args", "-o HostKeyAlgorithms=+ssh-rsa -o PubkeyAcceptedKeyTypes=+ssh-rsa",
      "--extra-vars", "mlbatch_version=${var.version} mlbatch_git_sha=${var.git_sha} mlbatch_image_name=${var.image_name}",
      "--extra-vars", "agent_wheel=${var.agent_wheel} agent_wheel_sha256=${var.agent_wheel_sha256} base_ca_bundle=${var.ca_bundle}",
      # The target kind the roles branch on (ansible/group_vars/all.yml): a VM or a container.
      "--extra-vars", "mlbatch_target=${source.type == "docker" ? "container" : "vm"}",
      "--extra-vars", "mlbatch_gpu=${var.gpu}",
      # No secret, ever, in these arguments: any user of the machine reads them in `ps`, and
      # Packer prints them (the plugin's "Executing Ansible" line, where sensitive variables are
      # not masked: hashicorp/packer#11078). The pre-pull logs in with the build VM's own
      # token, from its metadata server (ansible/roles/prepull).
      "--extra-vars", jsonencode({ prepull_images = var.prepull_images }),
    ]
    ansible_env_vars = ["ANSIBLE_CONFIG=${path.root}/../ansible/ansible.cfg"]
    # Ansible's user defaults to the local one (root): on the VM it would then skip
    # `become` (already root, it thinks) while Packer's ssh session is ssh_username's.
    override = {
      vm = { user = "packer" }
    }
  }

  post-processor "manifest" {
    output     = var.manifest_path
    strip_path = true
    custom_data = {
      image_name = var.image_name
      input_hash = var.input_hash
    }
  }
}
