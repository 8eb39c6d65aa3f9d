{
  description = "ccci: runs the CI pipeline of one Co-op Cloud recipe on a Docker Swarm host, and always tears it down";

  # Cargo.toml asks for Rust 1.89 (edition 2024): a nixpkgs release older than 25.11 is too old.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      cargoToml = builtins.fromTOML (builtins.readFile ./Cargo.toml);

      # Keys of the host config file, as ccci's registry (src/env_vars.rs) accepts them. A test
      # (tests/ops.rs) checks that these three lists together are exactly that set.
      # Host-wide settings: what the module's `settings` option takes.
      hostKeys = [
        "CCCI_ABRA"
        "CCCI_DOCKER"
        "CCCI_DOCKER_READS"
        "CCCI_ABRA_HOME"
        "CCCI_SERVER"
        "CCCI_GIT_BASE"
        "CCCI_DOMAIN_SUFFIX"
        "CCCI_APP_LOCK_DIR"
        "CCCI_RUNS_DIR"
        "CCCI_TESTS_DIR"
        "CCCI_HEALTH_URL"
        "CCCI_SECRETS_DIR"
        "CCCI_KILL_GRACE"
        "CCCI_LEAK_TIMEOUT_MS"
        "CCCI_DEADLINE"
        "CCCI_TEARDOWN_BUDGET"
        "CCCI_LOCK_TIMEOUT"
        "CCCI_GIT_TOKEN_ORIGINS"
        "CCCI_MIN_FREE_MB"
        "CCCI_MAX_DEADLINE"
        "CCCI_MAX_TEARDOWN_BUDGET"
        "CCCI_JUNIT"
        "CCCI_SKIP_FETCH"
        # Runner hosts sharing one multi-node swarm: the etcd cluster of the app lease.
        "CCCI_LEASE_ENDPOINTS"
        "CCCI_LEASE_TTL"
        "CCCI_LEASE_PREFIX"
        # ccci run refuses host settings from the environment that disagree with this file;
        # set to 1, it lets the runner's environment (a token passed as a Drone secret) override.
        "CCCI_TRUST_ENV"
      ];
      # Per-build values: accepted by ccci's parser, but set host-wide they would apply to every
      # Drone build whose parameter is empty. The module refuses them.
      perBuildKeys = [
        "RECIPE"
        "REF"
        "PR"
        "SRC"
        "STAGES"
        "CCCI_QUICK"
        "CCCI_ALLOW_ORPHAN"
      ];
      # Tokens: /etc/ccci/env written by this module lives in the world-readable Nix store. Pass
      # them to the Drone runner as secrets instead, with CCCI_TRUST_ENV = "1" (the janitor never
      # clones, so needs none).
      secretKeys = [ "CCCI_GIT_TOKEN" "GITEA_TOKEN" ];
    in
    {
      packages = forAllSystems (pkgs: rec {
        ccci = pkgs.rustPlatform.buildRustPackage {
          pname = "ccci";
          version = cargoToml.package.version;
          src = lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # No .git in the build sandbox: build.rs takes the commit from here.
          CCCI_GIT_COMMIT = self.shortRev or self.dirtyShortRev or "unknown";
          # The test suites need a Docker Swarm, root, real signals and process namespaces: they
          # run in the project's own CI (ci/test.sh), not in the Nix build sandbox.
          doCheck = false;
          meta = {
            description = cargoToml.package.description;
            license = lib.licenses.agpl3Plus;
            mainProgram = "ccci";
            platforms = lib.platforms.linux;
          };
        };
        default = ccci;
      });

      overlays.default = final: prev: {
        ccci = self.packages.${prev.stdenv.hostPlatform.system}.ccci;
      };

      # NixOS module: the host config file /etc/ccci/env, the runs dir and lock dir, the janitor
      # service and timer, and (optionally) the stop settings of the Drone runner's unit.
      nixosModules.default = { config, pkgs, ... }:
        let
          cfg = config.services.ccci;
          inherit (lib) mkOption mkEnableOption mkIf types;
          deadline = lib.toInt (cfg.settings.CCCI_DEADLINE or "3600");
          budget = lib.toInt (cfg.settings.CCCI_TEARDOWN_BUDGET or "600");
          # Everything ccci reads from the host file, including the two dirs the module manages.
          fileSettings = cfg.settings // {
            CCCI_RUNS_DIR = cfg.runsDir;
            CCCI_APP_LOCK_DIR = cfg.lockDir;
          };
          envFile = lib.concatStrings (lib.mapAttrsToList (k: v: "${k}=${v}\n") fileSettings);
          badKeys = lib.filter (k: !(lib.elem k hostKeys)) (lib.attrNames cfg.settings);
          jan = cfg.janitor;
          unitPath = cfg.path ++ lib.optional (cfg.abraPackage != null) cfg.abraPackage;
          # systemd-analyze security ≤ 6.0 (as ci/systemd/ccci-janitor.service): ProtectSystem
          # strict with the lock, runs and abra dirs writable; other processes' /proc and kill(2)
          # stay usable for the straggler sweep.
          hardening = {
            ProtectSystem = "strict";
            ReadWritePaths = [ "-${cfg.lockDir}" "-${cfg.runsDir}" "-/root/.abra" "-/var/lib/ccci" "-/run/docker.sock" ];
            ProtectHome = "read-only";
            PrivateTmp = true;
            PrivateDevices = true;
            NoNewPrivileges = true;
            ProtectKernelTunables = true;
            ProtectKernelModules = true;
            ProtectKernelLogs = true;
            ProtectControlGroups = true;
            ProtectHostname = true;
            ProtectClock = true;
            RestrictSUIDSGID = true;
            RestrictRealtime = true;
            RestrictNamespaces = true;
            LockPersonality = true;
            SystemCallArchitectures = "native";
            RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
            UMask = "0027";
            Nice = 5;
            IOSchedulingClass = "idle";
          };
        in
        {
          options.services.ccci = {
            enable = mkEnableOption "ccci's host settings, its directories and the janitor timer";

            package = mkOption {
              type = types.package;
              default = self.packages.${pkgs.stdenv.hostPlatform.system}.ccci;
              defaultText = lib.literalMD "the ccci package of this flake";
              description = "The ccci package.";
            };

            user = mkOption {
              type = types.str;
              default = "root";
              description = ''
                The user the Drone exec runner runs builds as. The janitor runs as this user too:
                ccci only locks lockfiles owned by the user it runs as, and it finds the abra home
                in that user's passwd entry.
              '';
            };

            group = mkOption {
              type = types.str;
              default = "root";
              description = "The group of the runs dir and the lock dir.";
            };

            runsDir = mkOption {
              type = types.str;
              default = "/var/lib/cc-ci-runs";
              description = "Per-run directories (CCCI_RUNS_DIR); results.json and run.log are kept here.";
            };

            lockDir = mkOption {
              type = types.str;
              default = "/run/lock";
              example = "/run/ccci/lock";
              description = ''
                The app-domain lockfiles (CCCI_APP_LOCK_DIR). /run/lock is shared with the
                predecessor during a migration; afterwards a directory only the CI user can write
                is safer, e.g. /run/ccci/lock (created by tmpfiles, emptied at boot like /run/lock).
              '';
            };

            settings = mkOption {
              type = types.attrsOf types.str;
              default = { };
              example = {
                CCCI_DOMAIN_SUFFIX = "ci.example.org";
                CCCI_SERVER = "default";
                CCCI_TESTS_DIR = "/etc/ccci/tests";
              };
              description = ''
                Further KEY=value lines of /etc/ccci/env: host-wide settings only (see docs/env.md).
                The runs dir and lock dir come from their own options; per-build values and tokens
                are refused.
              '';
            };

            path = mkOption {
              type = types.listOf types.package;
              default = [ pkgs.docker pkgs.git pkgs.curl ];
              defaultText = lib.literalExpression "[ pkgs.docker pkgs.git pkgs.curl ]";
              description = ''
                Programs the janitor services need on PATH (abraPackage is added to it).
              '';
            };

            abraPackage = mkOption {
              type = types.nullOr types.package;
              default = null;
              example = lib.literalExpression "pkgs.abra";
              description = ''
                The abra package, put on the janitor units' PATH: the janitor lists and removes
                run apps with `abra`. Without it (and without CCCI_ABRA in `settings`) every sweep
                fails to list apps through abra and falls back to docker's view alone.
              '';
            };

            janitor = {
              enable = mkOption {
                type = types.bool;
                default = true;
                description = "Run `ccci janitor` from a systemd timer.";
              };
              watch = mkOption {
                type = types.bool;
                default = true;
                description = "Also run `ccci janitor --watch`, which reaps an orphan the moment its run dies.";
              };
              onCalendar = mkOption {
                type = types.str;
                default = "*:0/15";
                description = "When the janitor runs (systemd.time calendar event), besides shortly after boot.";
              };
              deadline = mkOption {
                type = types.ints.positive;
                default = 1800;
                description = "Seconds after which a sweep stops between candidates (`--deadline`).";
              };
              pruneAfterDays = mkOption {
                type = types.ints.positive;
                default = 14;
                description = "Finished run dirs older than this lose their bulky parts (`--prune-after`).";
              };
            };

            droneRunnerUnit = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "drone-runner-exec";
              description = ''
                The systemd service running the Drone exec runner, when NixOS manages it. It gets
                KillMode=mixed and a TimeoutStopSec that covers a whole build (deadline + teardown
                budget + 10 min), so stopping the runner lets running builds finish their teardown
                instead of SIGKILLing them.
              '';
            };
          };

          config = mkIf cfg.enable (lib.mkMerge [
            {
              assertions = [
                {
                  assertion = badKeys == [ ];
                  message = "services.ccci.settings: not a host-wide ccci setting: ${lib.concatStringsSep ", " badKeys} (per-build values: ${lib.concatStringsSep " " perBuildKeys}; tokens: ${lib.concatStringsSep " " secretKeys}, pass them as Drone secrets)";
                }
                {
                  assertion = !(cfg.settings ? CCCI_RUNS_DIR || cfg.settings ? CCCI_APP_LOCK_DIR);
                  message = "services.ccci: set the runs dir and the lock dir with services.ccci.runsDir and services.ccci.lockDir, not in settings";
                }
                {
                  assertion = lib.all (v: !(lib.hasInfix "\n" v)) (lib.attrValues cfg.settings);
                  message = "services.ccci.settings: values must be single lines";
                }
              ];

              environment.systemPackages = [ cfg.package ];

              # Read by the Drone step, the janitor and a person at a shell alike.
              environment.etc."ccci/env".text = envFile;

              systemd.tmpfiles.rules =
                [ "d ${cfg.runsDir} 0755 ${cfg.user} ${cfg.group} -" ]
                ++ lib.optional (cfg.lockDir != "/run/lock") "d ${cfg.lockDir} 0755 ${cfg.user} ${cfg.group} -";

              systemd.services.ccci-janitor = mkIf jan.enable {
                description = "ccci janitor: reap what dead CI runs left behind";
                after = [ "docker.service" "network-online.target" ];
                wants = [ "network-online.target" ];
                path = unitPath;
                serviceConfig = hardening // {
                  # exec, not oneshot: RuntimeMaxSec has no effect on oneshot units.
                  Type = "exec";
                  User = cfg.user;
                  Group = cfg.group;
                  ExecStart = "${cfg.package}/bin/ccci janitor --deadline ${toString jan.deadline} --prune-after ${toString jan.pruneAfterDays}";
                  # SIGTERM to the janitor alone: it stops between candidates, then systemd SIGKILLs
                  # what is left. TimeoutStopSec is that grace; RuntimeMaxSec bounds the sweep,
                  # above its own deadline.
                  KillMode = "mixed";
                  TimeoutStopSec = "2min";
                  RuntimeMaxSec = "${toString (jan.deadline + 600)}s";
                  # Stopped on request (143) or by Ctrl-C (130) is not a failure.
                  SuccessExitStatus = "130 143";
                };
              };

              systemd.services.ccci-janitor-watch = mkIf (jan.enable && jan.watch) {
                description = "ccci janitor --watch: reap an orphaned CI run the moment it dies";
                after = [ "docker.service" "network-online.target" ];
                wants = [ "network-online.target" ];
                wantedBy = [ "multi-user.target" ];
                path = unitPath;
                serviceConfig = hardening // {
                  Type = "exec";
                  User = cfg.user;
                  Group = cfg.group;
                  ExecStart = "${cfg.package}/bin/ccci janitor --watch --deadline ${toString jan.deadline} --prune-after ${toString jan.pruneAfterDays}";
                  Restart = "on-failure";
                  RestartSec = "10s";
                  KillMode = "mixed";
                  TimeoutStopSec = "2min";
                  SuccessExitStatus = "130 143";
                };
              };

              systemd.timers.ccci-janitor = mkIf jan.enable {
                description = "Run the ccci janitor periodically";
                wantedBy = [ "timers.target" ];
                timerConfig = {
                  OnBootSec = "2min";
                  OnCalendar = jan.onCalendar;
                  RandomizedDelaySec = "1min";
                  AccuracySec = "1min";
                };
              };
            }
            (mkIf (cfg.droneRunnerUnit != null) {
              # Stopped before dockerd at shutdown, so teardowns in flight keep their docker.
              systemd.services.${cfg.droneRunnerUnit} = {
                after = [ "docker.service" ];
                wants = [ "docker.service" ];
                serviceConfig = {
                  KillMode = "mixed";
                  TimeoutStopSec = "${toString (deadline + budget + 600)}s";
                };
              };
            })
          ]);
        };
    };
}
