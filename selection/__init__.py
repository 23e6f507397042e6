"""Training-data selection: IFD (Cherry) scores, clustering, and picking samples."""
