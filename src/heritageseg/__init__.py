"""heritageseg: damage segmentation benchmark for heritage artworks."""
