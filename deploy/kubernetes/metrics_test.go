package kubernetes

import "testing"

// Every service is scraped on its admin port (METRICS_ADDR, default :9090),
// named "metrics", never on its API port; the pods say so in the
// conventional prometheus.io annotations.
func TestMetricsPortAndScrapeAnnotations(t *testing.T) {
	for _, path := range []string{"base", "overlays/dev", "overlays/prod"} {
		r := render(t, path)
		for name, d := range r.deployments {
			a := d.Spec.Template.Annotations
			if a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != "9090" || a["prometheus.io/path"] != "/metrics" {
				t.Errorf("%s %s: scrape annotations %v", path, name, a)
			}
			found := false
			for _, c := range d.Spec.Template.Spec.Containers {
				for _, p := range c.Ports {
					if p.Name == "metrics" {
						found = p.ContainerPort == 9090
					}
				}
			}
			if !found {
				t.Errorf("%s %s: no container port named metrics on 9090", path, name)
			}
		}
	}
}
