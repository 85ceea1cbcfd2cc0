"""The networks (plain torch), the one LightningModule, decoding and sampling, gradient flow."""
