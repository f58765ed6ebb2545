package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/warrenmesh/warren/internal/meshmanifests"
	"github.com/warrenmesh/warren/internal/warrenctl"
)

func newInstall(g *globals) *cobra.Command {
	var dryRun bool
	var timeout time.Duration
	var img meshmanifests.Images
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install Warren from the manifests built into this binary",
		Long: `Applies the manifests built into warrenctl (manifests/ of its source tree)
server-side, with field manager "warrenctl", in order, and waits for each part:
the CRDs established, the controller Deployment available, the warren-node
DaemonSet rolled out on every node. Run warrenctl check --pre first.
--dry-run prints the YAML instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := meshmanifests.Objects(img)
			if err != nil {
				return err
			}
			if dryRun {
				return warrenctl.WriteYAML(cmd.OutOrStdout(), objs)
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return warrenctl.Install(ctx, c, objs, cmd.OutOrStdout())
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the YAML, apply nothing")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up waiting after this long")
	cmd.Flags().StringVar(&img.Registry, "registry", "", `image registry in place of "warren.local"`)
	cmd.Flags().StringVar(&img.Tag, "image-tag", "", `image tag in place of "latest"`)
	return cmd
}

func newUninstall(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove Warren: what install applied, in reverse order",
		Long: `Deletes what warrenctl install applies, in reverse order, and waits for the
warren-node pods to be gone (each agent cleans its node as it stops) before
the rest, the namespace last.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := meshmanifests.Objects(meshmanifests.Images{})
			if err != nil {
				return err
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return warrenctl.Uninstall(ctx, c, objs, cmd.OutOrStdout())
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "give up waiting after this long")
	return cmd
}
