"""DCGAN as a Flower App: FedAvg of a small generator and discriminator on the 8x8 digits."""
