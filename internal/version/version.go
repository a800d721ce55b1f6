// Package version holds the tool version written into every image.
package version

// Version is ctr-cr's version; release builds override it with -ldflags -X.
var Version = "0.1.0-dev"
