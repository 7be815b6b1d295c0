pub mod proto {
    tonic::include_proto!("hydroplane.v1");
}
