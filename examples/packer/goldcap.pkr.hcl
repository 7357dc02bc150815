# A gold image built by Packer and captured by goldcap: Packer boots the
# installer in QEMU and provisions the VM; goldcap captures the VM's root
# into a curtin-ready tarball + MANIFEST, scrubs its identity in the archive
# stream, and uploads it to Digital Rebar Provision (files/images/...), where
# `goldcap profile` points image-deploy (or Eikon) at it.
#
#   export RS_ENDPOINT=https://drp.example.com:8092
#   # A token that may only store files and read them back (files post,get);
#   # RS_KEY authenticates the minting, and is not passed on.
#   export RS_TOKEN=$(RS_KEY=builder:... goldcap token --user builder --ttl 7200 --paths '*')
#   packer init . && packer build .
#
# The token reaches the VM through Packer's env-var file (use_env_var_file),
# so it is never on a command line there, and is a sensitive variable, so
# Packer masks it in its own output.

packer {
  required_plugins {
    qemu = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/qemu"
    }
  }
}

variable "drp_endpoint" {
  type    = string
  default = env("RS_ENDPOINT")
}

variable "drp_token" {
  type      = string
  default   = env("RS_TOKEN")
  sensitive = true
}

variable "drp_ca_cert" {
  type        = string
  default     = "drp-ca.pem"
  description = "The endpoint's certificate (PEM); goldcap verifies TLS"
}

variable "goldcap_binary" {
  type        = string
  default     = "goldcap"
  description = "A static goldcap build on the Packer host"
}

variable "iso_url" {
  type    = string
  default = "https://cdimage.debian.org/cdimage/release/current/amd64/iso-cd/debian-12.8.0-amd64-netinst.iso"
}

variable "iso_checksum" {
  type    = string
  default = "file:https://cdimage.debian.org/cdimage/release/current/amd64/iso-cd/SHA256SUMS"
}

# The OS install is yours: this source expects a Debian preseed in http/
# (packer-maas and RackN's packer-builder have complete ones); any builder
# works, since goldcap only needs a shell on the finished system.
source "qemu" "gold" {
  iso_url          = var.iso_url
  iso_checksum     = var.iso_checksum
  disk_size        = "8G"
  memory           = 2048
  headless         = true
  http_directory   = "http"
  boot_command     = ["<esc><wait>auto preseed/url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/preseed.cfg<enter>"]
  ssh_username     = "packer"
  ssh_password     = "packer"
  ssh_timeout      = "30m"
  shutdown_command = "sudo systemctl poweroff"
}

build {
  sources = ["source.qemu.gold"]

  # goldcap and the endpoint's certificate go to /tmp, whose content is never
  # captured.
  provisioner "file" {
    source      = var.goldcap_binary
    destination = "/tmp/goldcap"
  }

  provisioner "file" {
    source      = var.drp_ca_cert
    destination = "/tmp/drp-ca.pem"
  }

  provisioner "shell" {
    environment_vars = [
      "RS_ENDPOINT=${var.drp_endpoint}",
      "RS_TOKEN=${var.drp_token}",
    ]
    # The variables are written to a file and sourced, not put on the
    # command line (Packer's default execute_command inlines them).
    use_env_var_file = true
    execute_command  = "chmod +x {{ .Path }}; sudo sh -c '. {{ .EnvVarFile }} && {{ .Path }}'"
    script           = "capture.sh"
  }
}
