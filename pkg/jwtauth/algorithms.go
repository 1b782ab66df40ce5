package jwtauth

// SupportedAlgorithm reports whether Config.Algorithms may name alg, so that
// a service can check its ALGORITHMS setting in the same pass as its others.
func SupportedAlgorithm(alg string) bool { return supportedAlgs[alg] }
