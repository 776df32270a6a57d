//! The Kubernetes config source: kube-rs reflectors on Services, EndpointSlices and Pods.
