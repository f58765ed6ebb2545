package main

import (
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/warrenmesh/warren/internal/warrenctl"
)

func newEnroll(g *globals, enable bool) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "enroll NAMESPACE",
		Short: "Enroll a namespace's pods in the mesh (label " + warrenctl.MeshLabel + "=enabled)",
		Args:  exactArgs(1, "one namespace"),
	}
	if !enable {
		cmd.Use = "unenroll NAMESPACE"
		cmd.Short = "Take a namespace's pods out of the mesh (remove label " + warrenctl.MeshLabel + ")"
	}
	cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := g.clients()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		nss, err := c.Kube.CoreV1().Namespaces().List(cmd.Context(), metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var names []cobra.Completion
		for _, ns := range nss.Items {
			names = append(names, ns.Name)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := g.clients()
		if err != nil {
			return err
		}
		return warrenctl.Enroll(cmd.Context(), c, args[0], enable, cmd.OutOrStdout())
	}
	return cmd
}
